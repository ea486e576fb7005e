"""`kubetune`: the user's command line.

    kubetune report --prometheus-url URL [--kubeconfig K] [--namespace N] [--range 168h] [--step 1h] [--output DIR]
    kubetune check --prometheus-url URL [--kubeconfig K] [--namespace kubetune] [-o text|json]

Every failure a user can cause (a bad argument, a missing file, an unreachable Prometheus or API
server) is one line on stderr naming the fix, and exit code 2 (usage) or 1 (the run failed); no
traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubetune import __version__

DEFAULT_OUTPUT = Path("kubetune-report")


def _duration(text: str) -> float:
    from kubetune.report import parse_range

    try:
        return parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the argument, as every other failure is (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kubetune", description="kubetune command line")
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    report = commands.add_parser(
        "report", help="write an HTML and JSON report of usage history: rightsizing, capacity, trends, patterns, anomalies",
        description="Read usage history from the Prometheus HTTP API and today's pods, workloads and nodes from the "
                    "cluster; write DIR/report.html and DIR/report.json and print a summary table. Changes nothing. "
                    "Durations use Kubernetes' grammar: whole numbers with h, m, s or ms (168h = 7 days).")
    report.add_argument("--prometheus-url", required=True, help="Prometheus HTTP API (Prometheus, Thanos Query, Mimir, VictoriaMetrics)")
    report.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, then KUBECONFIG / ~/.kube/config")
    report.add_argument("--namespace", "-n", help="one namespace; default: every namespace")
    report.add_argument("--range", dest="range_seconds", type=_duration, default=_duration("168h"), metavar="DURATION",
                        help="how far back to read (default 168h, 7 days)")
    report.add_argument("--step", type=_duration, metavar="DURATION",
                        help="sample spacing (default 1h, or range/100 when shorter; raised to stay within Prometheus' "
                             "11,000 points per series; seasonality needs a step that divides a day)")
    report.add_argument("--rate-window", type=_duration, metavar="DURATION",
                        help="rate() and max_over_time() window per sample (default: the step, at least 1m)")
    report.add_argument("--bearer-token-file", type=Path, help="a file holding a bearer token for Prometheus")
    report.add_argument("--ca-file", type=Path, help="a CA bundle for an https Prometheus")
    report.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="seconds before one Prometheus query is given up (default 60)")
    report.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"directory for report.html and report.json (default ./{DEFAULT_OUTPUT}, created)")
    check = commands.add_parser(
        "check", help="check the installation: Prometheus and its series, rules, agents, webhook, RBAC, policies",
        description="One line per check (✓ or ✗ with the fix); exit code 1 when any check fails. Reads only.")
    check.add_argument("--prometheus-url", required=True, help="the Prometheus HTTP API the operator uses")
    check.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, then KUBECONFIG / ~/.kube/config")
    check.add_argument("--namespace", "-n", default="kubetune", help="the release's namespace (default kubetune)")
    check.add_argument("--rate-window", type=_duration, default=_duration("1m"), metavar="DURATION",
                       help="the operator's rate window, checked against the scrape interval (default 1m)")
    check.add_argument("--bearer-token-file", type=Path, help="a file holding a bearer token for Prometheus")
    check.add_argument("--ca-file", type=Path, help="a CA bundle for an https Prometheus")
    check.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per Prometheus query (default 10)")
    check.add_argument("--output", "-o", choices=("text", "json"), default="text", help="text (default) or json")
    return parser


def run_check(args: argparse.Namespace) -> int:
    import json

    from kubetune.checks import gather_check_input, run_checks
    from kubetune.prometheus import Prometheus
    from kubetune.settings import OperatorSettings

    for option, path in (("--bearer-token-file", args.bearer_token_file), ("--ca-file", args.ca_file)):
        if path is not None and not path.is_file():
            print(f"kubetune check: {option} {path}: no such file (give the path of a readable file)", file=sys.stderr)
            return 2
    if not args.prometheus_url.startswith(("http://", "https://")):
        print(f"kubetune check: --prometheus-url {args.prometheus_url!r} is not an http:// or https:// URL", file=sys.stderr)
        return 2
    prometheus = Prometheus(OperatorSettings(
        prometheus_url=args.prometheus_url, prometheus_bearer_token_file=args.bearer_token_file,
        prometheus_ca_file=args.ca_file, prometheus_timeout=args.timeout))
    results = run_checks(gather_check_input(prometheus, kubeconfig=args.kubeconfig, namespace=args.namespace,
                                            rate_window_seconds=args.rate_window))
    if args.output == "json":
        print(json.dumps({"ok": all(r.ok for r in results), "checks": [r.to_dict() for r in results]}, indent=1))
    else:
        print("\n".join(r.line() for r in results))
    return 0 if all(r.ok for r in results) else 1


def report_input_problem(args: argparse.Namespace) -> str | None:
    """The first argument that cannot work, as a sentence with the fix; None when all can."""
    if args.step is not None and (args.step <= 0 or args.range_seconds < args.step):
        return "--step must be positive and no longer than --range"
    for option, path in (("--bearer-token-file", args.bearer_token_file), ("--ca-file", args.ca_file)):
        if path is not None and not path.is_file():
            return f"{option} {path}: no such file (give the path of a readable file)"
    if args.output.exists() and not args.output.is_dir():
        return f"--output {args.output} is a file: give a directory (it is created when missing)"
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        return f"--kubeconfig {args.kubeconfig}: no such file"
    if not args.prometheus_url.startswith(("http://", "https://")):
        return f"--prometheus-url {args.prometheus_url!r} is not an http:// or https:// URL"
    return None


def run_report(args: argparse.Namespace) -> int:
    from kubetune.prometheus import Prometheus
    from kubetune.report import ReportError, build_report, choose_step, gather, prometheus_duration, render_table, write_report
    from kubetune.settings import OperatorSettings

    problem = report_input_problem(args)
    if problem:
        print(f"kubetune report: {problem}", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        print(f"kubetune report: {message}", file=sys.stderr, flush=True)

    step = choose_step(args.range_seconds, args.step)
    if args.step is not None and step != args.step:
        progress(f"--step {prometheus_duration(args.step)} gives {int(args.range_seconds / args.step) + 1:,} points "
                 f"per series, above Prometheus' 11,000: using {prometheus_duration(step)}")
    prometheus = Prometheus(OperatorSettings(
        prometheus_url=args.prometheus_url, prometheus_bearer_token_file=args.bearer_token_file,
        prometheus_ca_file=args.ca_file, prometheus_timeout=args.timeout))
    # Progress only for long windows: a short report is done before a line would help.
    long_run = args.range_seconds / step > 1000 or args.range_seconds >= 86400
    try:
        data = gather(prometheus, kubeconfig=args.kubeconfig, namespace=args.namespace,
                      range_seconds=args.range_seconds, step=step, rate_window=args.rate_window,
                      progress=progress if long_run else lambda message: None)
    except ReportError as e:
        print(f"kubetune report: {e}", file=sys.stderr)
        return 1
    if long_run:
        progress("analysing")
    report = build_report(data)
    try:
        html_path, json_path = write_report(report, args.output)
    except OSError as e:
        print(f"kubetune report: cannot write to {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    print(render_table(report))
    print(f"\nWrote {html_path} and {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        return run_report(args)
    if args.command == "check":
        return run_check(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
