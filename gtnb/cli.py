"""The `gtnb` command: parses arguments and delegates; no logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import GtnbError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gtnb", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="the local lab: up | down | status")
    lab.add_argument("action", choices=("up", "down", "status"))
    lab.add_argument("--state-dir", default=None, help="lab state directory (default .lab/)")
    lab.add_argument("--taint-master", action="store_true",
                     help="up: master1 takes no IGW pod, like the seed's cluster (2 schedulable nodes)")

    tog = sub.add_parser("toggle", help="put the target into a mode (manifest + HAProxy cfg + pods)")
    tog.add_argument("mode", help="current | improved")
    _target_args(tog)

    run = sub.add_parser("run", help="run one scenario; prints the run directory last")
    run.add_argument("scenario", help="S1 | S2 | S3 | S4")
    run.add_argument("--mode", required=True, help="current | improved")
    run.add_argument("--duration-s", type=float, default=None, help="request / stream / load length")
    run.add_argument("--kill-after-s", type=float, default=None, help="delay of the termination event")
    run.add_argument("--grace-period-s", type=float, default=None, help="grace period of the pod delete")
    run.add_argument("--workers", type=int, default=None, help="S3: concurrent clients")
    run.add_argument("--path", default=None, help="S3: what each worker GETs (default /fast)")
    run.add_argument("--artifacts", default=None, help="artifacts root (default artifacts/)")
    _target_args(run)

    rep = sub.add_parser("report", help="HTML for runs and artifacts/index.html")
    rep.add_argument("run_dirs", nargs="*", help="run directories (default: all under artifacts/)")
    rep.add_argument("--artifacts", default=None, help="artifacts root (default artifacts/)")

    certs = sub.add_parser("certs", help="write the private CA and example.local cert")
    certs.add_argument("--dir", default=None, help="where (default haproxy/certs/)")
    certs.add_argument("--force", action="store_true", help="replace existing files")

    pre = sub.add_parser("preflight", help="the seed's four checks on a target")
    _target_args(pre)

    img = sub.add_parser("images", help="build and sideload the workload images to every node")
    img.add_argument("action", choices=("sideload",))
    _target_args(img)
    return p


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="local", help="local | homelab")
    p.add_argument("--profile", default=None, help="lab profile file (homelab)")
    p.add_argument("--state-dir", default=None, help="local lab state directory")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except GtnbError as exc:
        print(f"gtnb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gtnb: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    # Imports are local so `gtnb --help` stays instant and each command loads only its part.
    if args.command == "lab":
        from .targets.local import lab

        if args.action == "up":
            print(lab.lab_up(state_dir=args.state_dir, taint_master=args.taint_master))
        else:
            action = {"down": lab.lab_down, "status": lab.lab_status}[args.action]
            print(action(state_dir=args.state_dir))
        return 0
    if args.command == "toggle":
        from tqdm import tqdm

        from .modes import ensure_mode, toggle
        from .targets import open_target

        ensure_mode(args.mode)  # a typo must not bring a lab up first
        with open_target(args.target, profile=args.profile, state_dir=args.state_dir) as target:
            # The steps narrated on stderr, above the rollout's progress bar.
            print(toggle(target, args.mode, log=lambda line: tqdm.write(line, file=sys.stderr)))
        return 0
    if args.command == "run":
        from .scenarios import run

        params = {
            k: v
            for k, v in {
                "duration_s": args.duration_s,
                "kill_after_s": args.kill_after_s,
                "grace_period_s": args.grace_period_s,
                "workers": args.workers,
                "path": args.path,
            }.items()
            if v is not None
        }
        run_dir = run(
            args.scenario,
            mode=args.mode,
            target=args.target,
            profile=args.profile,
            state_dir=args.state_dir,
            artifacts=args.artifacts,
            **params,
        )
        print(run_dir)
        return 0
    if args.command == "report":
        from .report import render_reports

        for path in render_reports(args.run_dirs, artifacts=args.artifacts):
            print(path)
        return 0
    if args.command == "certs":
        from .certs import make_certs

        for path in make_certs(args.dir, force=args.force):
            print(path)
        return 0
    if args.command == "preflight":
        from .preflight import preflight
        from .targets import open_target

        with open_target(args.target, profile=args.profile, state_dir=args.state_dir) as target:
            result = preflight(target)
            print(result)
            return 0 if result.ok else 1
    if args.command == "images":
        from .images import sideload

        sideload(profile=args.profile)
        return 0
    raise AssertionError(args.command)  # argparse guarantees one of the above


if __name__ == "__main__":
    sys.exit(main())
