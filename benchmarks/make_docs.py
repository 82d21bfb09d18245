"""Write docs/benchmarks.md from the result files in benchmarks/results/, then check the docs' links.

    python benchmarks/make_docs.py

One section per results file (*.md), in this order: accuracy, pjm_zones, smoothing_window, neural_residual,
neural_zones, fit_speed, tune_asha_vs_fifo, serve_latency, serve_hop_cost_*, then any others; a file that does not exist is skipped. The per-dataset
accuracy_<name>.md files are left out where accuracy.md, which accuracy.py writes from them, exists. The
headings inside a file move below its section's heading. A part of a file measured with the design before
2026-12-01 (the LSTM behind a 5 % gate; the LSTM-only Ray Tune search) gets a note saying so. The other
files in benchmarks/results/ (CSV, JSON, text) are listed at the end.

Then every relative link in README.md and docs/*.md is checked, the file and any #anchor; a broken link is
printed and the exit status is 1.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
OUT = DOCS / "benchmarks.md"

ORDER = ("accuracy", "pjm_zones", "smoothing_window", "neural_residual", "neural_zones", "fit_speed", "tune_asha_vs_fifo", "serve_latency", "serve_hop_cost")
TITLES = {
    "accuracy": "Day-ahead accuracy",
    "smoothing_window": "One forecast path: the bounded smoothing of weather inputs",
    "neural_residual": "Does the neural residual earn its place?",
    "neural_zones": "The neural residual on the eight PJM zones",
    "fit_speed": "Fit and forecast speed",
    "tune_asha_vs_fifo": "Ray Tune: ASHA vs FIFO",
    "serve_latency": "Ray Serve: latency and throughput",
    "serve_hop_cost": "Ray Serve: what a handle call costs",
    "tune_vs_defaults": "Ray Tune: the search against the defaults",
    "influx_outage": "InfluxDB outage",
    "fleet_scale": "Many series: fitting on Ray against a plain loop",
    "serve_fleet": "Many series in one Serve application (model multiplexing)",
    "busy_machine": "A busy machine",
    "pjm_zones": "Nine PJM series against the peers",
    "refit_speed": "One refit on a long series",
}

# The design changed on this date: the neural residual learns out-of-fold errors and is kept by validation
# blocks; a Ray Tune trial is a whole hybrid scored by rolling-origin MAPE. Older figures are marked.
DESIGN_CHANGED = "2026-12-01"
OLD_SEARCH_MARKERS = ("trial-epochs", "trial_epochs", "best val loss", "best_val_loss", "TRAINING LSTM RESIDUAL")
OLD_SEARCH_NOTE = (f"Measured with the design before {DESIGN_CHANGED} (LSTM-only search: each trial one LSTM, "
                   "ranked by its validation loss, with epochs as ASHA's resource).")
# Groups whose figures depend on the model, so a part dated before the change gets this note.
OLD_DESIGN_NOTES = {
    "accuracy": (f"Measured with the design before {DESIGN_CHANGED}: the neural residual was an LSTM behind a "
                 "5 % gate on the last 28 days, which kept it in no refit, so the final hybrid here is trend + "
                 "Fourier + ridges and trees."),
    "serve_latency": (f"Measured with the design before {DESIGN_CHANGED}: a bundle with an LSTM residual, "
                      "served by the deployment then called `ResidualLSTM` (now `Residual`)."),
}

DATE = re.compile(r"\b(20\d\d-\d\d-\d\d)\b")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def group_of(stem: str) -> str | None:
    return next((g for g in ORDER if stem == g or stem.startswith(g + "_")), None)


def result_files() -> list[Path]:
    """The results' markdown files in the page's order."""
    files = sorted(RESULTS.glob("*.md"))
    if (RESULTS / "accuracy.md").exists():
        files = [f for f in files if not f.stem.startswith("accuracy_")]

    def key(path: Path) -> tuple[int, int, str]:
        group = group_of(path.stem)
        rank = ORDER.index(group) if group else len(ORDER)
        return rank, int(path.stem != group), path.name

    return sorted(files, key=key)


def in_code(lines: list[str]) -> list[bool]:
    """For each line, whether it lies inside a fenced code block (the fences included)."""
    inside, flags = False, []
    for line in lines:
        fence = line.lstrip().startswith("```")
        flags.append(inside or fence)
        if fence:
            inside = not inside
    return flags


def shifted(text: str, group: str | None) -> str:
    """The file's text with its headings moved below a level-2 section heading, and a note after each part
    (a top-level heading and what follows it) measured before the design change."""
    lines = text.strip("\n").splitlines()
    code = in_code(lines)
    levels = [len(m.group(1)) for line, c in zip(lines, code, strict=True) if not c and (m := HEADING.match(line))]
    top = min(levels, default=3)
    shift = max(0, 3 - top)
    parts: list[list[str]] = [[]]
    for line, c in zip(lines, code, strict=True):
        match = None if c else HEADING.match(line)
        if match and len(match.group(1)) == top:
            parts.append([])
        parts[-1].append("#" * min(6, len(match.group(1)) + shift) + line[len(match.group(1)):] if match else line)
    note = OLD_DESIGN_NOTES.get(group or "")
    out: list[str] = []
    for part in parts:
        dates = DATE.findall("\n".join(part))
        if note and dates and max(dates) < DESIGN_CHANGED:
            has_heading = bool(part) and HEADING.match(part[0]) is not None
            part = [part[0], "", f"> {note}", "", *part[1:]] if has_heading else [f"> {note}", "", *part]
        out.extend(part)
    # Runs of blank lines (some files have them, and the note adds one) become one.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (lower case, punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    lines = text.splitlines()
    seen: dict[str, int] = {}
    out = set()
    for line, c in zip(lines, in_code(lines), strict=True):
        match = None if c else HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def section(path: Path) -> tuple[str, str]:
    """(heading text, markdown) of one results file's section."""
    text = path.read_text()
    group = group_of(path.stem)
    title = TITLES.get(group or path.stem, path.stem.replace("_", " "))
    heading = f"{title} (`{path.name}`)"
    script = f"benchmarks/{group or path.stem}.py"
    command = f"python {script}" if (ROOT / script).exists() else None
    if command and group == "neural_residual" and path.stem != group:
        command += f" --tag {path.stem[len(group):]}"
    source = f"From [`benchmarks/results/{path.name}`](../benchmarks/results/{path.name})"
    lines = [f"## {heading}", "", source + (f", written by `{command}`." if command else "."), ""]
    if any(marker in text for marker in OLD_SEARCH_MARKERS):
        lines += [f"> {OLD_SEARCH_NOTE}", ""]
    lines.append(shifted(text, group))
    return heading, "\n".join(lines)


def other_files() -> list[str]:
    """A line per results file that is not markdown, with a note where it holds an LSTM-only search's output."""
    lines = []
    for path in sorted(p for p in RESULTS.iterdir() if p.is_file() and p.suffix != ".md"):
        note = ""
        if path.suffix in (".txt", ".json") and any(m in path.read_text(errors="replace") for m in OLD_SEARCH_MARKERS):
            note = f": measured with the design before {DESIGN_CHANGED} (LSTM-only search)"
        lines.append(f"- [`{path.name}`](../benchmarks/results/{path.name}){note}")
    return lines


def write_page() -> int:
    sections = [section(path) for path in result_files()]
    header = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python benchmarks/make_docs.py` from benchmarks/results/. Do not edit by hand. -->",
        "",
        "This page is generated by `python benchmarks/make_docs.py` from the result files in "
        "`benchmarks/results/`, which the scripts in `benchmarks/` write; rerun a benchmark, then the script, "
        "rather than editing it. Each section is one file, dated where the file is. Parts measured with the "
        f"design before {DESIGN_CHANGED} say so. How the figures were arrived at is in the "
        "[research log](research-log.md); the summary is in the [README](../README.md#results).",
        "",
        *[f"- [{heading}](#{slug(heading)})" for heading, _ in sections],
        "- [Other result files](#other-result-files)",
        "",
    ]
    others = "\n".join(["## Other result files", "", *other_files()])
    DOCS.mkdir(exist_ok=True)
    OUT.write_text("\n\n".join(["\n".join(header).rstrip(), *(text for _, text in sections), others]) + "\n")
    return len(sections)


def broken_links() -> list[str]:
    """Relative links in README.md and docs/*.md whose file or #anchor does not exist."""
    problems = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        lines = page.read_text().splitlines()
        for number, (line, c) in enumerate(zip(lines, in_code(lines), strict=True), start=1):
            if c:
                continue
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z]+:", target):
                    continue
                path_part, _, anchor = target.partition("#")
                path = (page.parent / path_part).resolve() if path_part else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not path.exists():
                    problems.append(f"{where}: no such file")
                elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
                    problems.append(f"{where}: no heading #{anchor}")
    return problems


def main() -> int:
    count = write_page()
    print(f"wrote {OUT.relative_to(ROOT)}: {count} result files")
    problems = broken_links()
    for problem in problems:
        print(f"broken link: {problem}", file=sys.stderr)
    print(f"links in README.md and docs/*.md: {f'{len(problems)} broken' if problems else 'OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
