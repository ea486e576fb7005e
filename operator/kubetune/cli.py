"""`kubetune`: the user's command line.

    kubetune report --prometheus-url URL [--kubeconfig K] [--namespace N] [--range 7d] [--step 1h] --output DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubetune import __version__


def _duration(text: str) -> float:
    from kubetune.report import parse_range

    try:
        return parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="kubetune command line")
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    report = commands.add_parser(
        "report", help="write an HTML and JSON report of usage history: rightsizing, capacity, trends, patterns, anomalies",
        description="Read usage history from the Prometheus HTTP API and today's pods, workloads and nodes from the "
                    "cluster; write DIR/report.html and DIR/report.json and print a summary table. Changes nothing.")
    report.add_argument("--prometheus-url", required=True, help="Prometheus HTTP API (Prometheus, Thanos Query, Mimir, VictoriaMetrics)")
    report.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, then ~/.kube/config / KUBECONFIG")
    report.add_argument("--namespace", "-n", help="one namespace; default: every namespace")
    report.add_argument("--range", dest="range_seconds", type=_duration, default=_duration("7d"), metavar="DURATION",
                        help="how far back to read (default 7d)")
    report.add_argument("--step", type=_duration, default=_duration("1h"), metavar="DURATION",
                        help="sample spacing (default 1h; seasonality needs a step that divides a day)")
    report.add_argument("--rate-window", type=_duration, metavar="DURATION",
                        help="rate() and max_over_time() window per sample (default: the step, at least 1m)")
    report.add_argument("--bearer-token-file", type=Path, help="a file holding a bearer token for Prometheus")
    report.add_argument("--ca-file", type=Path, help="a CA bundle for an https Prometheus")
    report.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="where report.html and report.json go")
    return parser


def run_report(args: argparse.Namespace) -> int:
    from kubetune.report import PrometheusAPI, ReportError, build_report, gather, render_table, write_report

    if args.step <= 0 or args.range_seconds < args.step:
        print("kubetune report: --step must be positive and no longer than --range", file=sys.stderr)
        return 2
    headers = {}
    if args.bearer_token_file:
        headers["Authorization"] = f"Bearer {args.bearer_token_file.read_text().strip()}"
    api = PrometheusAPI(args.prometheus_url, headers=headers, verify=str(args.ca_file) if args.ca_file else True)
    try:
        data = gather(api, kubeconfig=args.kubeconfig, namespace=args.namespace, range_seconds=args.range_seconds,
                      step=args.step, rate_window=args.rate_window)
    except ReportError as e:
        print(f"kubetune report: {e}", file=sys.stderr)
        return 1
    report = build_report(data)
    html_path, json_path = write_report(report, args.output)
    print(render_table(report))
    print(f"\nWrote {html_path} and {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        return run_report(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
