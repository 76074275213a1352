"""The discriminator lab: networks, data, GAN training and probes of trained discriminators.

Modules: :mod:`.nets` (discriminators and generators with any normalizer, plus a functional forward
pass over explicit effective weights), :mod:`.data` (embedded scikit-learn images and loaders for
files a user already has), :mod:`.config` (strict TOML training configs), :mod:`.train` (seeded,
resumable GAN training with probes), :mod:`.probes` (per-layer gradients, exact operator norms,
variances, Hessian norms), :mod:`.hessian` (Lanczos on Hessian-vector products) and
:mod:`.figures` (per-layer gradient norms through training against their bounds).
"""
