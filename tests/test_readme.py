"""README.md and docs/ stay true to the tree.

Cited paths exist, links resolve, every environment variable and dependency is
in its table, nothing outside the repository is cited, and the README stays short.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
README = BASE_DIR / "README.md"
MAX_README_LINES = 350

# Backticked spans without a slash that still name a file by their extension.
FILE_EXTENSIONS = (
    ".py",
    ".md",
    ".yml",
    ".yaml",
    ".toml",
    ".conf",
    ".lua",
    ".html",
    ".txt",
    ".css",
)
# Paths the docs cite that exist only at run time; each must be git-ignored.
RUNTIME_PATHS = {".data/postgres", "bench/results/latest.md"}
# Files whose environment reads the configuration table must list.
ENV_SOURCES = (
    "config/settings.py",
    "config/serve.py",
    "config/gunicorn.py",
    "config/embedded.py",
    "config/sentry.py",
    "config/dotenv.py",
    "config/wsgi.py",
    "config/metrics.py",
)
ENV_READ_PATTERNS = (
    re.compile(r"\benv\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\""),
    re.compile(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\""),
    re.compile(r"os\.environ\[\s*\"([A-Z][A-Z0-9_]*)\"\s*\]"),
    re.compile(r"os\.getenv\(\s*\"([A-Z][A-Z0-9_]*)\""),
    re.compile(r"\"([A-Z][A-Z0-9_]*)\"\s+(?:not\s+)?in\s+os\.environ"),
)
# Shell variables the Makefile reads that are not configuration.
MAKEFILE_NOT_CONFIG = {"HOME"}


def markdown_files() -> list[Path]:
    return [README, *sorted((BASE_DIR / "docs").glob("*.md"))]


def without_fences(text: str) -> str:
    """The text outside fenced code blocks (their commands are examples)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", without_fences(text))


def cited_paths(text: str) -> set[str]:
    """Backticked spans that name a repository path.

    A span counts when it is one word of path characters, is not a URL or an
    absolute path (the API's `/api/...`, `/healthz`, `/metrics`), and either has a
    `/` and ends in `/` or in a file extension (`config/cache.py`, `tests/catalog/`),
    or is a bare file name with a known extension (`manage.py`). Rates such as
    `10/min` and CIDRs such as `172.28.0.0/16` are therefore not paths.
    """
    paths = set()
    for span in backticked(text):
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*", span) or span.startswith(
            ".."
        ):
            continue
        last = span.rstrip("/").rsplit("/", 1)[-1]
        if "/" in span.rstrip("/") or span.endswith("/"):
            if span.endswith("/") or re.search(r"\.[a-z]+$", last):
                paths.add(span)
        elif span.endswith(FILE_EXTENSIONS):
            paths.add(span)
    return paths


def repository_paths() -> set[str]:
    """Files and directories in the tree: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = {p for p in listed if (BASE_DIR / p).exists()}
    for p in list(paths):
        parts = p.split("/")[:-1]
        paths.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    return paths


def missing_paths(text: str, known: set[str]) -> set[str]:
    return {p for p in cited_paths(text) - RUNTIME_PATHS if p not in known}


def section(text: str, heading: str) -> str:
    """The body of a `## heading` section, up to the next `## ` heading."""
    match = re.search(
        rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S
    )
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown text."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", without_fences(text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
        found.add(slug.replace(" ", "-"))
    return found


def test_cited_paths_exist() -> None:
    known = repository_paths()
    missing = {
        f"{md.relative_to(BASE_DIR)}: {p}"
        for md in markdown_files()
        for p in missing_paths(md.read_text(), known)
    }
    assert not missing, f"cited paths not in the repository: {sorted(missing)}"


def test_the_path_check_catches_a_missing_file() -> None:
    known = repository_paths()
    text = (
        "See `config/health.py`, `tests/catalog/`, `manage.py` and `config/cahce.py`.\n"
    )
    assert missing_paths(text, known) == {"config/cahce.py"}
    assert missing_paths("`docs/nowhere/` and `PERF_GROUND.md`", known) == {
        "docs/nowhere/",
        "PERF_GROUND.md",
    }
    # Not paths: API paths, URLs, rates, CIDRs, commands, dotted names.
    not_paths = (
        "`/api/v1` `/healthz` `redis://127.0.0.1:6379/15` `10/min` `172.28.0.0/16` "
        "`python manage.py seed_demo` `config.cache.bump_namespace`"
    )
    assert cited_paths(not_paths) == set()


def test_runtime_paths_are_git_ignored() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *sorted(RUNTIME_PATHS)],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert set(ignored) == RUNTIME_PATHS


def test_no_citation_outside_the_repository() -> None:
    outside = re.compile(
        r"DESIGN\.md|STYLE\.md|PERF_GROUND\.md|(?<![\w.])/(?:work|home|root|tmp)/"
    )
    for md in markdown_files():
        found = outside.findall(md.read_text())
        assert not found, f"{md.relative_to(BASE_DIR)} cites {found}"


def test_relative_links_resolve() -> None:
    broken = []
    for md in markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", without_fences(md.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (md.parent / file_part).resolve() if file_part else md
            if not linked.exists():
                broken.append(f"{md.name}: {target}")
            elif (
                anchor
                and linked.suffix == ".md"
                and anchor not in anchors(linked.read_text())
            ):
                broken.append(f"{md.name}: {target} (no such heading)")
    assert not broken, broken


def test_readme_is_short_and_keeps_its_sections() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < MAX_README_LINES
    for heading in (
        "The two commands",
        "Map of the code",
        "Configuration",
        "API overview",
        "Operators",
        "Operations",
        "Benchmarks",
        "Dependencies",
    ):
        section(text, heading)
    assert "make run" in text and "make test" in text and "make stop" in text
    assert "make bench" in section(text, "Benchmarks")
    for doc in ("caching", "bulk-loads", "operations", "benchmarks"):
        assert f"(docs/{doc}.md)" in text


def environment_reads() -> set[str]:
    names = set()
    for relative in ENV_SOURCES:
        source = BASE_DIR / relative
        if source.exists():
            text = source.read_text()
            for pattern in ENV_READ_PATTERNS:
                names.update(pattern.findall(text))
    makefile = (BASE_DIR / "Makefile").read_text()
    names.update(re.findall(r"^([A-Z][A-Z0-9_]*)\s*\?=", makefile, flags=re.M))
    names.update(
        set(re.findall(r"\$\$\{?([A-Z][A-Z0-9_]*)", makefile)) - MAKEFILE_NOT_CONFIG
    )
    return names


def test_configuration_table_lists_every_variable() -> None:
    names = environment_reads()
    assert {
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "WORKERS",
        "PORT",
        "PYTHON",
    } <= names
    table = section(README.read_text(), "Configuration")
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", table))
    assert not names - listed, (
        f"not in the README's configuration table: {sorted(names - listed)}"
    )


def test_dependency_table_lists_every_package() -> None:
    project = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())
    requirements = (
        project["project"]["dependencies"] + project["dependency-groups"]["dev"]
    )

    def name(requirement: str) -> str:
        return (
            re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
            .lower()
            .replace("_", "-")
        )

    table = section(README.read_text(), "Dependencies")
    listed = {name(span) for span in backticked(table)}
    missing = {name(r) for r in requirements} - listed
    assert not missing, f"not in the README's dependency table: {sorted(missing)}"
