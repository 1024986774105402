"""The ``emvsbayes`` command line.

Exit status: 0 success; 2 a problem with the user's input (one line, no traceback); 1 an internal
failure (with a hint to report it; ``--debug`` shows the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
import unicodedata
from pathlib import Path

from emvsbayes.errors import Terminated, UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit status 2 like every other user error."""

    def error(self, message):
        raise UserError(f"{message} (see 'emvsbayes {self.prog.split()[-1]} --help')" if " " in self.prog
                        else f"{message} (see 'emvsbayes --help')")


def _out_path(text: str) -> Path:
    """``--out``'s value: an empty one (an unset shell variable) is refused; Path("") would be the current folder.
    So is a name longer than the file system takes (it failed after the fit, or as an internal error)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path (a folder for run and study, an HTML file for report)")
    if text == "-":
        # many tools read "-" as standard output; here it made a folder named "-"
        raise argparse.ArgumentTypeError("is '-', but emvsbayes writes files, not to standard output; give a path (a "
                                         "folder for run and study, an HTML file for report)")
    control = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if control is not None:
        # a line break in a folder's name breaks every listing and script that reads one name per line
        raise argparse.ArgumentTypeError(f"holds the control character {control!r}; choose a name without it")
    path = Path(text)
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)))
    limit = _name_max(path)
    if len(os.fsencode(longest)) > limit:
        raise argparse.ArgumentTypeError(f"a name in it is {len(os.fsencode(longest)):,} bytes long, more than the "
                                         f"{limit} this file system takes; choose a shorter one")
    return path


def _name_max(path: Path) -> int:
    """The longest file name (bytes) the file system holding ``path`` (its nearest existing folder) takes."""
    folder = path.absolute()
    while not os.path.isdir(folder) and folder != folder.parent:  # (Path.exists raises on a name too long)
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _readme_path(text: str) -> Path:
    """``spec-keys --write``: a file; an empty value was read as "." (".: cannot be read (Is a directory)")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give the file whose table to regenerate, e.g. --write README.md")
    return Path(text)


def _page_path(text: str) -> Path:
    """``report --out``: an HTML file. A value ending in '/' names a folder, which Path() would drop: the page
    was written as a file named like the folder."""
    path = _out_path(text)
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} names a folder; give the HTML file to write, e.g. "
                                         f"--out {path / 'index.html'}")
    return path


def _parser() -> argparse.ArgumentParser:
    # --debug and --quiet work before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="print nothing but errors")
    parser = _Parser(prog="emvsbayes", description="Fit a mixture by EM and by PyMC and compare them.", parents=[common])
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="run a comparison spec: writes DIR/results.nc and DIR/index.html")
    run.add_argument("spec", help="a spec file, e.g. models/two_coins.toml")
    run.add_argument("--out", type=_out_path, default=None, help="output folder (default reports/<spec name>)")
    run.add_argument("--seed", type=int, default=None, help="master seed (overrides the spec's)")
    run.add_argument("--strict", action="store_true",
                     help="exit with status 3 when a sampler check fails (divergences, R-hat > 1.01); "
                          "the results and report are still written")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="a spec with [data] store: an existing Dask scheduler for its chunked EM, e.g. "
                          "tcp://host:8786 (default: a local cluster)")
    run.add_argument("--workers", type=int, default=None,
                     help="a spec with [data] store: local worker processes (default: one per core)")

    report = sub.add_parser("report", parents=[common], help="re-render a report from a results file, without refitting")
    report.add_argument("results", type=Path, help="a results.nc written by 'emvsbayes run' (or a study.nc by 'emvsbayes study')")
    report.add_argument("--out", type=_page_path, default=None, help="HTML file to write (default: index.html beside the results)")

    study = sub.add_parser("study", parents=[common], help="run (or resume) a simulation study: DIR/study.nc and DIR/index.html")
    study.add_argument("spec", help="a study spec, e.g. models/study_coverage_gmm.toml")
    study.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    study.add_argument("--out", type=_out_path, default=None, help="output folder (default reports/<spec name>)")
    study.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")

    sub.add_parser("datasets", parents=[common], help="list the bundled data sets")
    keys = sub.add_parser("spec-keys", parents=[common], help="print every spec key with its default (Markdown)")
    keys.add_argument("--write", type=_readme_path, default=None, metavar="README",
                      help="regenerate the table between its markers in this file (README.md) instead of printing it")
    return parser


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


def _cmd_run(args) -> int:
    from emvsbayes.spec import load_spec

    if args.seed is not None and not 0 <= args.seed < 2**63:
        from emvsbayes.spec import SEED_RULE

        raise UserError(f"--seed must be {SEED_RULE}, got {args.seed}")
    # The spec is checked before the heavy imports (numpy, xarray, PyMC), so a mistake in it is reported at once.
    spec = load_spec(args.spec)
    from emvsbayes.pipeline import run_spec

    progress = None if args.quiet else (lambda message: _say(args, message))
    outcome = run_spec(spec, args.out, seed=args.seed, command=" ".join(["emvsbayes", *sys.argv[1:]]), progress=progress,
                      scheduler=args.scheduler, n_workers=args.workers)
    if not args.quiet:
        from emvsbayes.report import summary_card_text

        _say(args, summary_card_text(outcome.tree))
    _say(args, f"results: {outcome.results_path}")
    _say(args, f"report: {outcome.report_path}")
    if args.strict:
        from emvsbayes.errors import ChecksFailedError
        from emvsbayes.pipeline import sampler_checks
        from emvsbayes.results import read_results

        # From the file as written, so --strict judges exactly what the report shows.
        failed = sampler_checks(read_results(outcome.results_path))["failed"]
        if failed:
            raise ChecksFailedError(f"--strict: sampler checks failed: {'; '.join(failed)} "
                                    f"(results and report written to {outcome.results_path.parent})")
    return 0


def _cmd_report(args) -> int:
    from emvsbayes.pipeline import rerender_report

    out = rerender_report(args.results, args.out)
    _say(args, f"report: {out}")
    return 0


def _cmd_datasets(args) -> int:
    from emvsbayes.data import list_datasets

    for info in list_datasets():
        _say(args, f"{info.name:22s} {info.kind:11s} {info.rows:4d} rows  {info.description}")
    return 0


def _cmd_study(args) -> int:
    from emvsbayes.study import run_study

    progress = None if args.quiet else (lambda message: _say(args, message))
    outcome = run_study(args.spec, scheduler=args.scheduler, out=args.out, n_workers=args.workers, progress=progress)
    _say(args, f"results: {outcome.results_path}")
    _say(args, f"report: {outcome.report_path}")
    if outcome.n_computed and outcome.n_failed == outcome.n_computed:
        # Nothing was learnt: a script or CI job must see it, --quiet or not (study.nc and the page still list
        # every error, and a rerun computes the failed replicates again).
        print(f"emvsbayes: error: all {outcome.n_failed} replicate(s) run failed, the first with {outcome.first_error}; "
              f"the report lists every error: {outcome.report_path}", file=sys.stderr)
        return 1
    if outcome.n_failed:
        _say(args, f"{outcome.n_failed} replicate(s) failed; the report lists their errors")
    return 0


def _cmd_spec_keys(args) -> int:
    from emvsbayes.spec_keys import spec_keys_markdown, write_readme

    if args.write is None:
        print(spec_keys_markdown())  # printed even with --quiet: it is the command's output
    else:
        _say(args, f"spec keys written to {write_readme(args.write)}")
    return 0


COMMANDS = {"run": _cmd_run, "report": _cmd_report, "study": _cmd_study, "datasets": _cmd_datasets,
            "spec-keys": _cmd_spec_keys}


def _quiet_libraries(quiet: bool) -> None:
    """Keep the terminal to what a user needs: the sampler's progress, our messages, errors."""
    import logging
    import warnings

    # pytensor warns at every import that it found no BLAS; it says nothing the user can act on here.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation")
    if quiet:
        warnings.filterwarnings("ignore")
        for name in ("pymc", "pytensor", "arviz", "nutpie", "jax", "numpyro", "distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # pymc sets its logger's level when imported: quieten it again then (importing it here only to
        # quieten it cost seconds in runs that never use it).
        from emvsbayes.lazy_imports import run_after_import

        run_after_import("pymc", _quieten_pymc)


def _quieten_pymc(pymc) -> None:
    import logging

    logging.getLogger("pymc").setLevel(logging.ERROR)


def _terminate(signum, frame) -> None:
    raise Terminated


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line's arguments; a file whose name starts with '-' (``-spec.toml``), which argparse reads as an
    option and then reports a missing spec, is named with the way to give it."""
    try:
        return _parser().parse_args(argv)
    except UserError:
        dashed = [a for a in argv if a.startswith("-") and not a.startswith("--") and len(a) > 2
                  and (a.endswith((".toml", ".nc")) or os.path.lexists(a))]
        if dashed:
            raise UserError(f"{dashed[0]} is read as an option, as it starts with '-'; give the file as ./{dashed[0]}") \
                from None
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # SIGTERM's default ends the process at once: a run killed by `timeout` or a batch system left its
    # unpublished outputs and the folder's lock for the next run to clear. Raised as Ctrl-C is, it unwinds.
    with contextlib.suppress(ValueError):  # not the main thread (main() called from a thread): left as it is
        signal.signal(signal.SIGTERM, _terminate)
    # The command line draws only to SVG files: a user's MPLBACKEND (a GUI, or a value matplotlib refuses when
    # it is imported, after the whole fit) has no say here. Set before anything imports matplotlib.
    os.environ["MPLBACKEND"] = "Agg"
    debug = "--debug" in argv
    args = None
    try:
        args = _parse(argv)
        args.quiet = getattr(args, "quiet", False)
        _quiet_libraries(args.quiet)
        if args.command is None:
            _parser().print_help()
            return 2
        return COMMANDS[args.command](args)
    except UserError as error:
        if debug:
            traceback.print_exc()
        print(f"emvsbayes: error: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt as interrupt:
        how, status = ("terminated", 143) if isinstance(interrupt, Terminated) else ("interrupted", 130)
        # a study keeps its finished replicates (whole records) for the same command to resume from
        kept = "; its finished replicates are kept: run the same command again to resume" \
            if args is not None and getattr(args, "command", None) == "study" else ""
        print(f"emvsbayes: {how}; nothing half-written was left behind{kept}", file=sys.stderr)
        return status
    except Exception as error:  # an internal failure: say so, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        print(f"emvsbayes: internal error: {type(error).__name__}: {error} "
              "(this is a bug; rerun with --debug and report the output)".replace("\n", " "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
