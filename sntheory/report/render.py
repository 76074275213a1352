"""Render the report: ``README.md`` (Markdown) and a self-contained ``index.html``.

Both carry the same content, in this order:

1. the overall verdict with counts (HOLDS / VIOLATED / INCONCLUSIVE / OUTSIDE-HYPOTHESES), the
   command that regenerates the report, commit, versions, device and wall time;
2. the verdict table: one line per (claim, experiment, statement, inside/outside the hypotheses)
   with the tightest setting (smallest slack; a VIOLATED or INCONCLUSIVE row first), its bound, the
   measured value with its 95% CI, the slack and the verdict with its count; negative controls in
   their own lines, marked as such and never counted as failures;
3. the experiments (claim, profile, seed, wall time, commit);
4. one section per claim in THEORY.md order (T2, T3, R, P1, P2, T1, P3, then others) with the
   statement and hypotheses a reader needs without the paper, then per experiment its summary,
   figures with captions, provenance and every row.

The HTML inlines its images as base64 ``data:`` URIs and its style sheet; it loads nothing and
runs no script. All text is escaped (``html.escape`` for HTML; ``|`` and tag-like ``<`` for
Markdown tables).
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..monte_carlo.store import atomic_write_text
from .experiments import VERDICT_RULES, claim_sort_key, overall_verdict, verdict_counts
from .rows import ClaimRow

__all__ = ["ClaimInfo", "CLAIM_INFO", "render_markdown", "render_html", "write_report",
           "verdict_groups", "VerdictGroup"]

VERDICTS = ("HOLDS", "VIOLATED", "INCONCLUSIVE", "OUTSIDE-HYPOTHESES")


@dataclass(frozen=True)
class ClaimInfo:
    title: str
    statement: str
    hypotheses: str
    meaning: str = ""


CLAIM_INFO: dict[str, ClaimInfo] = {
    "T2": ClaimInfo(
        "Theorem 2: variance of spectrally normalised matrices",
        "For an m x n matrix A with i.i.d. entries from a symmetric law and A_bar = A/||A||_sp: "
        "Var(a_bar_ij) <= 1/max{m,n} (upper bound, any law); for Gaussian or uniform entries the "
        "variance is also at least of order 1/max{m,n}, i.e. L_hat = 1/(max{m,n} Var) stays "
        "bounded (checked against 13/3, the constant of the explicit Gaussian bound "
        "Var >= 1/((sqrt m + sqrt n)^2 + 1)). Estimated as the mean stable rank over m n.",
        "Upper bound: none (the stable rank is at most min{m,n}). Lower bounds: Gaussian (the "
        "explicit bound) or Gaussian/uniform entries with m, n >= 2 and max{m,n} >= 3 (L_hat). "
        "Negative controls: heavy-tailed (Cauchy, Student-t 2.5) and non-symmetric (exponential) "
        "entries, and deliberately broken normalisers.",
        "For a dense layer SN sets the weight variance to about 1/fan_in, as LeCun initialisation "
        "does (paper Fig. 7)."),
    "T3": ClaimInfo(
        "Theorem 3: variance under bidirectional normalisation (BSN) of conv kernels",
        "For a c_out x c_in x kh x kw kernel w with i.i.d. symmetric entries, k = kh kw and "
        "w_bar = w / ((||w^||_sp + ||w^'||_sp)/2): Var(w_bar) <= 4/(k (sqrt c_in + sqrt c_out)^2) "
        "<= 4/(fan_in + fan_out), twice Xavier's 2/(fan_in + fan_out); for Gaussian or uniform "
        "entries it is also of order 1/(fan_in + fan_out) (L_hat checked against 13/6). SNw's "
        "variance on the same kernels is shown beside it (<= 1/max{c_out, c_in k}).",
        "Upper bounds: none. Lower bounds: Gaussian (explicit bound) or Gaussian/uniform entries "
        "with c_in, c_out >= 2 and c_in k, c_out k >= 3. Negative controls: heavy-tailed and "
        "non-symmetric entries.",
        "BSN gives conv layers a Xavier-like variance where SNw gives 1/max{c_out, c_in k}."),
    "R": ClaimInfo(
        "Claim R: SNw versus SNConv",
        "For a conv layer with a given geometry, ||w^||_sp <= ||w~||_sp <= alpha ||w^||_sp, where "
        "w^ is the reshaped kernel (what SNw divides by), w~ the layer's expanded matrix (what "
        "SNConv divides by) and alpha the square root of the largest number of output positions "
        "that read one input pixel (3 for 3x3 stride 1, 2 for 4x4 stride 2). Hence "
        "Var_SNConv lies in [Var_SNw/alpha^2, Var_SNw].",
        "Upper bound: any kernel and geometry. Lower bound: some output position's receptive "
        "field lies wholly inside the unpadded input. Negative control: the constant 1 in place "
        "of alpha (SNw's implicit claim that it makes the layer 1-Lipschitz).",
        "SNConv divides by up to alpha times more than SNw: the paper's explanation of SNConv's "
        "vanishing gradients (Figs. 4-6, 20, 21)."),
    "P1": ClaimInfo(
        "Proposition 1: gradients are bounded",
        "For every layer t: ||grad_{w_t} D(x)||_F <= ||a_L'||_inf (prod_i ||w_i||_sp) / "
        "||w_t||_sp ||x||, and ||grad_theta D(x)|| <= sqrt(sum_t bound_t^2); with SN every layer's "
        "bound is ||x|| (conv layers: operator norms, times alpha for the kernel gradient; biases: "
        "the forward recursion of THEORY.md).",
        "Internal activations 1-Lipschitz with a(0) = 0; a deterministic inequality (any probe "
        "above its bound beyond float tolerance is a violation).",
        "Paper Figs. 2 and 12."),
    "P2": ClaimInfo(
        "Proposition 2: rescaling invariance",
        "With positively homogeneous activations and no biases, scaling layer i by c_i > 0 with "
        "prod_i c_i = 1 leaves D(x) unchanged for every x (with biases: when bias i is scaled by "
        "prod_{j<=i} c_j).",
        "ReLU / leaky ReLU, no biases (or biases scaled as stated); checked to float64 round-off; "
        "negative controls: tanh, ELU, softplus, unscaled biases."),
    "T1": ClaimInfo(
        "Theorem 1: equal spectral norms minimise the gradient",
        "Over rescalings with prod c_t = 1, ||grad D_{theta_c}||^2 = sum_t g_t^2 / c_t^2 is "
        "minimised at c_t proportional to g_t; inside the set where g_t ||w_t||_sp is the same for "
        "every layer, the minimiser gives every layer the same spectral norm.",
        "Homogeneous network without biases; the hypothesis g_t ||w_t|| = const is itself "
        "measured on trained discriminators.",
        "Paper Figs. 3, 14, 15."),
    "P3": ClaimInfo(
        "Proposition 3: the Hessian is bounded",
        "Almost everywhere, ||H_t||_sp <= ||a_L''||_inf (prod_{i != t} ||w_i||_sp)^2 ||x||^2 for "
        "the Hessian of D with respect to layer t's weights (toolkit form).",
        "ReLU / leaky ReLU internal activations; cross-layer blocks and smooth activations are "
        "reported as outside the claim."),
}


# ---- formatting helpers ----------------------------------------------------------------------

def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _measured(row: ClaimRow) -> str:
    text = _num(row.measured)
    if row.ci_low is not None and row.ci_high is not None:
        text += f" [{_num(row.ci_low)}, {_num(row.ci_high)}]"
    return text


def _slack(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.3g}%"


def _verdict_text(row: ClaimRow) -> str:
    if row.verdict == "OUTSIDE-HYPOTHESES":
        observed = row.extra.get("observed", "")
        return f"OUTSIDE-HYPOTHESES ({observed.replace('-', ' ')})" if observed else row.verdict
    return row.verdict


def _rows(result: dict) -> list[ClaimRow]:
    return [ClaimRow.from_dict(r) for r in result["rows"]]


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell (and for GitHub's HTML sanitiser)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    text = text.replace("|", "\\|")
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def _inline_md_to_html(text: str) -> str:
    """Escape, then render the inline Markdown a summary uses: `code` and **bold**."""
    escaped = _h(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


# ---- grouping for the verdict table ----------------------------------------------------------

@dataclass(frozen=True)
class VerdictGroup:
    """Rows of one statement of one experiment, inside or outside the hypotheses."""

    claim: str
    experiment: str
    statement: str
    inside: bool
    rows: tuple[ClaimRow, ...]

    @property
    def representative(self) -> ClaimRow:
        """The row to show: a VIOLATED, then INCONCLUSIVE row first; else the smallest slack
        (for negative controls: the clearest failure)."""
        def slack(r: ClaimRow) -> float:
            return r.slack if r.slack is not None else math.inf
        if self.inside:
            rank = {"VIOLATED": 0, "INCONCLUSIVE": 1}
            return min(self.rows, key=lambda r: (rank.get(r.verdict, 2), slack(r)))
        failing = [r for r in self.rows if r.extra.get("observed") == "bound-fails"]
        return min(failing or self.rows, key=slack)

    @property
    def verdict(self) -> str:
        if not self.inside:
            return "OUTSIDE-HYPOTHESES"
        return str(overall_verdict(self.rows))

    def verdict_text(self) -> str:
        n = len(self.rows)
        if not self.inside:
            fails = sum(r.extra.get("observed") == "bound-fails" for r in self.rows)
            return f"OUTSIDE-HYPOTHESES: bound fails in {fails} of {n} (not counted as failures)"
        count = sum(r.verdict == self.verdict for r in self.rows)
        return f"{self.verdict} ({count} of {n})"

    def setting_text(self) -> str:
        rep = self.representative
        if len(self.rows) == 1:
            return rep.setting
        word = "tightest" if self.inside else "clearest failure"
        return f"{len(self.rows)} settings; {word}: {rep.setting}"

    def hypotheses_text(self) -> str:
        rep = self.representative
        if self.inside:
            return rep.hypotheses
        return f"{rep.hypotheses} — not met: {rep.note}" if rep.note else rep.hypotheses


def verdict_groups(results: Sequence[dict]) -> list[VerdictGroup]:
    groups: dict[tuple, list[ClaimRow]] = {}
    for result in results:
        for row in _rows(result):
            key = (claim_sort_key(row.claim), row.claim, result["name"], not row.hypotheses_hold,
                   row.statement)
            groups.setdefault(key, []).append(row)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[3])):
        rows = groups[key]
        out.append(VerdictGroup(key[1], key[2], key[4], not key[3], tuple(rows)))
    return out


def _all_rows(results: Sequence[dict]) -> list[ClaimRow]:
    return [row for result in results for row in _rows(result)]


def _claims(results: Sequence[dict]) -> list[str]:
    return sorted({r["claim"] for r in results}, key=claim_sort_key)


def _commits(results: Sequence[dict]) -> list[str]:
    return sorted({r["provenance"]["git_commit"] for r in results})


def _overall_line(rows: list[ClaimRow]) -> tuple[str, dict[str, int]]:
    return str(overall_verdict(rows)), verdict_counts(rows)


def _seeds(results: Sequence[dict]) -> str:
    return ", ".join(f"{r['name']} {r['seed']}" for r in results)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS)


# ---- Markdown --------------------------------------------------------------------------------

def render_markdown(results: Sequence[dict], meta: dict) -> str:
    """The report as GitHub-flavoured Markdown (figures linked relative to the report folder)."""
    rows = _all_rows(results)
    verdict, counts = _overall_line(rows)
    prov = meta["provenance"]
    lines = ["# sntheory report", ""]
    if not results:
        lines += ["No experiment results yet: run `sntheory report`.", ""]
        return "\n".join(lines)
    lines += [
        f"**Overall verdict: {verdict}** — {len(results)} experiments, {len(rows)} checked rows: "
        f"{_counts_text(counts)}. OUTSIDE-HYPOTHESES rows are negative controls: shown, never "
        f"counted as failures.", "",
        f"Regenerate: `{meta['command']}` (finished experiments whose config, profile and seed "
        f"are unchanged are reused; add `--force` to recompute them).", "",
        f"- commit of the results: {', '.join(f'`{c}`' for c in _commits(results))}"
        f" (report rendered at `{prov['git_commit']}`)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}",
        f"- device: {prov['device'].get('cpu', '?')} ({prov['device'].get('logical_cores', '?')} "
        f"logical cores, {prov['device'].get('platform', '?')})",
        f"- seeds: {_seeds(results)}",
        f"- wall time: {_duration(sum(r['wall_s'] for r in results))} of computation for the "
        f"results shown; this run {_duration(meta['wall_s'])} (ran: {', '.join(meta['ran']) or 'none'}; "
        f"reused: {', '.join(meta['reused']) or 'none'})",
        f"- rendered: {prov['utc_time']}", "",
        "## Verdicts", "",
        "| claim | statement | hypotheses | setting | bound | measured [95% CI] | slack | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in verdict_groups(results):
        rep = group.representative
        lines.append("| " + " | ".join(_md(c) for c in (
            group.claim, group.statement, group.hypotheses_text(), group.setting_text(),
            _num(rep.bound), _measured(rep), _slack(rep.slack), group.verdict_text())) + " |")
    lines += ["", "Slack: relative margin to the bound, `(bound - measured)/|bound|` for an upper "
              "bound and `(measured - bound)/|bound|` for a lower one; positive means inside. "
              "Each line shows the tightest setting of its group.", "",
              f"How verdicts are decided: {VERDICT_RULES}", "",
              "## Experiments", "",
              "| experiment | claim | title | profile | seed | rows | verdict | wall time | commit |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| " + " | ".join(_md(c) for c in (
            f"[{r['name']}](#experiment-{r['name']})", r["claim"], r["title"], r["profile"],
            r["seed"], len(r["rows"]), r["verdict"], _duration(r["wall_s"]),
            r["provenance"]["git_commit"][:12])) + " |")
    lines.append("")
    for claim in _claims(results):
        info = CLAIM_INFO.get(claim)
        lines += [f"## {claim} — {info.title}" if info else f"## {claim}", ""]
        if info:
            lines += [f"**Statement.** {info.statement}", "", f"**Hypotheses.** {info.hypotheses}",
                      ""]
            if info.meaning:
                lines += [f"**Why it matters.** {info.meaning}", ""]
        for r in (x for x in results if x["claim"] == claim):
            lines += _markdown_experiment(r, meta["status"].get(r["name"], ""))
    return "\n".join(lines)


def _markdown_experiment(r: dict, status: str) -> list[str]:
    rows = _rows(r)
    counts = verdict_counts(rows)
    prov = r["provenance"]
    lines = [f"<a id=\"experiment-{r['name']}\"></a>", "",
             f"### {r['name']}: {_md(r['title'])}", ""]
    if status:
        lines += [f"> Note: {status}; rerun `{r['command']}` to refresh it.", ""]
    lines += [f"**Verdict: {r['verdict']}** ({_counts_text(counts)})."
              + (f" Mirrors {r['figure']}." if r["figure"] else ""), "", r["summary"], ""]
    for figure in r["figures"]:
        lines += [f"![{_md(figure['caption'])}]({r['name']}/{figure['path']})", "",
                  f"*{figure['caption']}*", ""]
    lines += [f"- command: `{r['command']}` (profile {r['profile']}, seed {r['seed']})",
              f"- wall time {_duration(r['wall_s'])}; device {r['device']}; commit "
              f"`{prov['git_commit']}`; computed {prov['utc_time']}",
              f"- files: [records.csv]({r['name']}/records.csv), "
              f"[records.json]({r['name']}/records.json), "
              f"[config.toml]({r['name']}/config.toml) (resolved), "
              f"[result.json]({r['name']}/result.json)", "",
              f"<details><summary>All {len(rows)} rows of {r['name']}</summary>", "",
              "| setting | statement | bound | measured [95% CI] | slack | verdict | note |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(_md(c) for c in (
            row.setting, row.statement, _num(row.bound), _measured(row), _slack(row.slack),
            _verdict_text(row), row.note)) + " |")
    lines += ["", "</details>", ""]
    return lines


# ---- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#1b1b1b;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.86em}
th,td{border:1px solid #c8c8c8;padding:0.25em 0.5em;vertical-align:top;text-align:left}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v-HOLDS{background:#e3f4e3}.v-VIOLATED{background:#f9d6d5;font-weight:bold}
.v-INCONCLUSIVE{background:#fff2cc}.v-OUTSIDE-HYPOTHESES{background:#ececf6;color:#444}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:0.9em;color:#333;max-width:70em}
code{background:#f4f4f4;padding:0 0.2em}
.meta{font-size:0.9em;color:#333}
.note{background:#fff8e0;padding:0.4em;border-left:3px solid #e0b000}
"""


def _img_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _td(text: str, cls: str = "") -> str:
    return f"<td class=\"{cls}\">{_h(text)}</td>" if cls else f"<td>{_h(text)}</td>"


def render_html(results: Sequence[dict], meta: dict, out_dir: str | Path) -> str:
    """The report as one self-contained HTML page (images from ``out_dir`` inlined)."""
    out_dir = Path(out_dir)
    rows = _all_rows(results)
    verdict, counts = _overall_line(rows)
    prov = meta["provenance"]
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             "<title>sntheory report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>sntheory report</h1>"]
    if not results:
        parts += ["<p id=\"overall-verdict\" data-verdict=\"none\">No experiment results yet: "
                  "run <code>sntheory report</code>.</p></body></html>"]
        return "\n".join(parts)
    parts += [
        f"<p id=\"overall-verdict\" data-verdict=\"{_h(verdict)}\"><strong class=\"v-{_h(verdict)}\">"
        f"Overall verdict: {_h(verdict)}</strong> — {len(results)} experiments, {len(rows)} "
        f"checked rows: {_h(_counts_text(counts))}. OUTSIDE-HYPOTHESES rows are negative "
        f"controls: shown, never counted as failures.</p>",
        f"<p>Regenerate: <code>{_h(meta['command'])}</code> (finished experiments whose config, "
        f"profile and seed are unchanged are reused; add <code>--force</code> to recompute them)."
        f"</p>",
        "<ul class=\"meta\">",
        f"<li>commit of the results: {_h(', '.join(_commits(results)))} (report rendered at "
        f"{_h(prov['git_commit'])})</li>",
        f"<li>versions: {_h(', '.join(f'{k} {v}' for k, v in prov['versions'].items()))}</li>",
        f"<li>device: {_h(prov['device'].get('cpu', '?'))} "
        f"({_h(prov['device'].get('logical_cores', '?'))} logical cores, "
        f"{_h(prov['device'].get('platform', '?'))})</li>",
        f"<li>seeds: {_h(_seeds(results))}</li>",
        f"<li>wall time: {_h(_duration(sum(r['wall_s'] for r in results)))} of computation for "
        f"the results shown; this run {_h(_duration(meta['wall_s']))} (ran: "
        f"{_h(', '.join(meta['ran']) or 'none')}; reused: {_h(', '.join(meta['reused']) or 'none')})"
        f"</li>",
        f"<li>rendered: {_h(prov['utc_time'])}</li></ul>",
        "<h2 id=\"verdicts\">Verdicts</h2>",
        "<table id=\"verdict-table\"><thead><tr><th>claim</th><th>statement</th>"
        "<th>hypotheses</th><th>setting</th><th>bound</th><th>measured [95% CI]</th>"
        "<th>slack</th><th>verdict</th></tr></thead><tbody>",
    ]
    for group in verdict_groups(results):
        rep = group.representative
        parts.append(
            f"<tr data-experiment=\"{_h(group.experiment)}\" data-inside=\"{str(group.inside).lower()}\">"
            + _td(group.claim) + _td(group.statement) + _td(group.hypotheses_text())
            + _td(group.setting_text()) + _td(_num(rep.bound), "num bound")
            + _td(_measured(rep), "num") + _td(_slack(rep.slack), "num")
            + _td(group.verdict_text(), f"v-{group.verdict}") + "</tr>")
    parts += ["</tbody></table>",
              "<p>Slack: relative margin to the bound, (bound − measured)/|bound| for an upper "
              "bound and (measured − bound)/|bound| for a lower one; positive means inside. Each "
              "line shows the tightest setting of its group.</p>",
              f"<p>How verdicts are decided: {_h(VERDICT_RULES)}</p>",
              "<h2 id=\"experiments\">Experiments</h2>",
              "<table id=\"experiment-table\"><thead><tr><th>experiment</th><th>claim</th>"
              "<th>title</th><th>profile</th><th>seed</th><th>rows</th><th>verdict</th>"
              "<th>wall time</th><th>commit</th></tr></thead><tbody>"]
    for r in results:
        parts.append(
            f"<tr><td><a href=\"#exp-{_h(r['name'])}\">{_h(r['name'])}</a></td>"
            + _td(r["claim"]) + _td(r["title"]) + _td(r["profile"]) + _td(str(r["seed"]), "num")
            + _td(str(len(r["rows"])), "num") + _td(r["verdict"], f"v-{r['verdict']}")
            + _td(_duration(r["wall_s"]), "num") + _td(r["provenance"]["git_commit"][:12])
            + "</tr>")
    parts.append("</tbody></table>")
    for claim in _claims(results):
        info = CLAIM_INFO.get(claim)
        parts.append(f"<h2 id=\"claim-{_h(claim)}\">{_h(claim)}"
                     + (f" — {_h(info.title)}" if info else "") + "</h2>")
        if info:
            parts.append(f"<p><strong>Statement.</strong> {_h(info.statement)}</p>")
            parts.append(f"<p><strong>Hypotheses.</strong> {_h(info.hypotheses)}</p>")
            if info.meaning:
                parts.append(f"<p><strong>Why it matters.</strong> {_h(info.meaning)}</p>")
        for r in (x for x in results if x["claim"] == claim):
            parts += _html_experiment(r, out_dir, meta["status"].get(r["name"], ""))
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_experiment(r: dict, out_dir: Path, status: str) -> list[str]:
    rows = _rows(r)
    counts = verdict_counts(rows)
    prov = r["provenance"]
    name = r["name"]
    parts = [f"<section id=\"exp-{_h(name)}\" data-rows=\"{len(rows)}\" "
             f"data-figures=\"{len(r['figures'])}\">",
             f"<h3>{_h(name)}: {_h(r['title'])}</h3>"]
    if status:
        parts.append(f"<p class=\"note\">Note: {_h(status)}; rerun <code>{_h(r['command'])}"
                     f"</code> to refresh it.</p>")
    parts.append(f"<p><strong class=\"v-{_h(r['verdict'])}\">Verdict: {_h(r['verdict'])}"
                 f"</strong> ({_h(_counts_text(counts))})."
                 + (f" Mirrors {_h(r['figure'])}." if r["figure"] else "") + "</p>")
    parts.append(f"<p>{_inline_md_to_html(r['summary'])}</p>")
    for figure in r["figures"]:
        uri = _img_data_uri(out_dir / name / figure["path"])
        parts.append(f"<figure><img src=\"{uri}\" alt=\"{_h(figure['caption'])}\">"
                     f"<figcaption>{_h(figure['caption'])}</figcaption></figure>")
    parts += [
        "<ul class=\"meta\">",
        f"<li>command: <code>{_h(r['command'])}</code> (profile {_h(r['profile'])}, seed "
        f"{_h(r['seed'])})</li>",
        f"<li>wall time {_h(_duration(r['wall_s']))}; device {_h(r['device'])}; commit "
        f"{_h(prov['git_commit'])}; computed {_h(prov['utc_time'])}</li>",
        f"<li>files (in the report folder): {_h(name)}/records.csv, {_h(name)}/records.json, "
        f"{_h(name)}/config.toml (resolved), {_h(name)}/result.json</li></ul>",
        f"<details><summary>All {len(rows)} rows of {_h(name)}</summary>",
        f"<table class=\"rows\" data-experiment=\"{_h(name)}\"><thead><tr><th>setting</th>"
        "<th>statement</th><th>bound</th><th>measured [95% CI]</th><th>slack</th>"
        "<th>verdict</th><th>note</th></tr></thead><tbody>"]
    for row in rows:
        parts.append("<tr>" + _td(row.setting) + _td(row.statement)
                     + _td(_num(row.bound), "num bound") + _td(_measured(row), "num")
                     + _td(_slack(row.slack), "num")
                     + _td(_verdict_text(row), f"v-{row.verdict}") + _td(row.note) + "</tr>")
    parts += ["</tbody></table></details>", "</section>"]
    return parts


def write_report(out_dir: str | Path, results: Sequence[dict], meta: dict) -> tuple[Path, Path]:
    """Write ``README.md`` and ``index.html`` atomically; return their paths."""
    out_dir = Path(out_dir)
    readme, index = out_dir / "README.md", out_dir / "index.html"
    atomic_write_text(readme, render_markdown(results, meta))
    atomic_write_text(index, render_html(results, meta, out_dir))
    return readme, index
