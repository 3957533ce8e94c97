"""Developer verbs: `create`, `build`, `validate` (Python actors and manifest checks).

Plain functions with typer annotations; theater_otp.cli registers them with
`app.command()(create)` and so on. Domain errors become one `error:` line on
stderr and exit code 1, like every other verb.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import TheaterError

# Our own aliases: importing theater_otp.cli here would be circular.
DevJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameArg = Annotated[str, typer.Argument(help="The actor's name (the folder's too, unless --dir).")]
TemplateOpt = Annotated[str, typer.Option("--template", "-t",
                                          help="basic | message-server | supervisor | storage | http")]
DirOpt = Annotated[Optional[Path], typer.Option("--dir", help="Where to create the project (default ./NAME).")]
ProjectArg = Annotated[Path, typer.Argument(help="Project folder (with manifest.toml), a manifest, or a supervision.toml.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Build even if nothing changed since the last build.")]
CheckArg = Annotated[Path, typer.Argument(help="An actor manifest, a project folder or a supervision.toml.")]


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def create(name: NameArg, template: TemplateOpt = "basic", directory: DirOpt = None,
           json_out: DevJsonOpt = False) -> None:
    """Create a Python actor project: app.py, theater_sdk.py, manifest.toml, supervision.toml, wit/, README.md."""
    from .pyactor.scaffold import create_project

    try:
        folder = create_project(name, template, directory)
    except TheaterError as exc:
        _err(str(exc))
        raise typer.Exit(code=exc.exit_code) from None
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if json_out:
        print(json.dumps({"created": str(folder), "name": name, "template": template, "files": files}, indent=2))
        return
    print(f"created {folder} ({template}): {', '.join(f for f in files if not f.startswith('wit/'))}, wit/")
    print(f"next: cd {folder} && theater-otp build && theater-otp up supervision.toml")


def build(project: ProjectArg = Path("."), force: ForceOpt = False, json_out: DevJsonOpt = False) -> None:
    """Build a Python actor with componentize-py and compile it into the component cache.

    PROJECT is a project folder, its manifest, or a supervision.toml (then every manifest of the
    tree with a [build] table is built)."""
    from .cli_progress import Progress
    from .config.rules import is_supervision
    from .pyactor.build import BuildError, build_tree
    from .pyactor.build import build as build_one

    try:
        with Progress(f"building {project}", spinner=not json_out) as progress:
            if is_supervision(project):
                results = build_tree(project, force=force, say=progress.say)
            else:
                results = [build_one(project, force=force, say=progress.say)]
    except BuildError as exc:
        _err(str(exc))
        if exc.details:
            print(exc.details, file=sys.stderr)
        if json_out:
            print(json.dumps({"ok": False, "error": str(exc), "details": exc.details}, indent=2))
        raise typer.Exit(code=1) from None
    except TheaterError as exc:
        _err(str(exc))
        raise typer.Exit(code=exc.exit_code) from None
    if json_out:
        if len(results) == 1 and not is_supervision(project):
            print(json.dumps({"ok": True, **results[0].to_plain()}, indent=2))
        else:
            print(json.dumps({"ok": True, "actors": [r.to_plain() for r in results]}, indent=2))
        return
    for result in results:
        if result.skipped:
            print(f"{result.name}: up to date ({result.wasm}, artifact cached)")
            continue
        steps = []
        if result.componentized:
            steps.append(f"componentize-py {result.componentize_s:.1f} s")
        if result.compiled:
            steps.append(f"compile {result.compile_s:.1f} s")
        print(f"{result.name}: built {result.wasm} ({result.bytes / 1e6:.1f} MB; {', '.join(steps) or 'cached'})")


def validate(path: CheckArg, json_out: DevJsonOpt = False) -> None:
    """Check a manifest or supervision.toml and its components; list every problem (exit 1 if any)."""
    from .pyactor.checks import validate as run_validate

    if not path.exists():
        _err(f"{path}: file not found")
        raise typer.Exit(code=1)
    try:
        report = run_validate(path, say=_say)
    except TheaterError as exc:
        _err(str(exc))
        raise typer.Exit(code=exc.exit_code) from None
    if json_out:
        print(json.dumps(report.to_plain(), indent=2))
    else:
        for problem in report.problems:
            _err(str(problem))
        if report.ok:
            print(f"ok: {report.path}: {len(report.manifests)} manifest(s), "
                  f"{len(report.components)} component(s) checked")
        else:
            print(f"{len(report.problems)} problem(s) in {report.path}", file=sys.stderr)
    if not report.ok:
        raise typer.Exit(code=1)
