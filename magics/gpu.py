"""``%%gpu SPEC`` runs a cell on a remote GPU kernel; ``%gpu ...`` manages sessions and shows the bill.

::

    %%gpu H100 [--wait S] [--push a,b] [--pull c,d] [--quiet] [--sync | --strict] [--env NAME=VALUE]
               [--secret NAME] [--sync-dir PATH]
    %gpu hosts | status | stop [TYPE|all] | idle SECONDS
    %gpu bill [--days N] [--csv FILE] [--operator]
    %gpu budget [AMOUNT [--soft 0.8] [--period day|week|month] | --remove] [--user]
    %gpu push a,b [SPEC] | pull c,d [SPEC]
    %gpu upload PATH [--to DIR] [SPEC] | download PATH [--to PATH] [SPEC]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring

from burstlab.errors import BurstlabError, RemoteError, SessionLostError, TransferError
from burstlab.gpus import parse_gpu_spec
from burstlab.workspace import get_workspace, no_gpu_message, write_csv

from .render import CELL_MIME, Publisher, Report, bill_section, cell_footer, cell_record, cell_share, money, table

USAGE = __doc__


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would sys.exit(); a magic must raise
        raise BurstlabError(f"%%gpu: {message}.\n{USAGE}")


DESCRIPTION = """Run this cell on a remote GPU kernel, reusing the notebook's session of that spec: its state
persists between cells until the session is stopped or released when idle."""

COMMANDS = """%gpu COMMAND (the line magic):
  %gpu hosts                          GPU inventory: type, host, count, free, NVML or declared
  %gpu status                         this notebook's sessions: GPUs, host, state, time held, cost, idle
  %gpu stop [TYPE|SPEC|all]           release sessions (all by default)
  %gpu idle SECONDS                   release idle sessions after SECONDS (0: never)
  %gpu bill [--days N] [--csv FILE] [--operator]
                                      this notebook's and your usage; --operator: everyone's and utilisation
  %gpu budget [AMOUNT [--soft 0.8] [--period day|week|month] | --remove] [--user]
                                      show, set or remove this notebook's (or, --user, your) budget in dollars;
                                      --period: spending resets each day, week or month (UTC)
  %gpu push a,b [SPEC] | pull c,d [SPEC]
                                      move variables to or from a running session
  %gpu upload PATH [--to DIR] [SPEC] | download PATH [--to PATH] [SPEC]
                                      move files or folders to or from the session's work directory
                                      (chunked, checked by hash; unchanged files are not resent)
"""


def _bill_parser() -> _Parser:
    p = _Parser(prog="%gpu bill", add_help=False)
    p.add_argument("--days", type=float, default=None)
    p.add_argument("--csv", default=None)
    p.add_argument("--operator", action="store_true")
    return p


def _budget_parser() -> _Parser:
    p = _Parser(prog="%gpu budget", add_help=False)
    p.add_argument("amount", nargs="?", default=None)
    p.add_argument("--user", action="store_true")
    p.add_argument("--soft", type=float, default=0.8)
    p.add_argument("--remove", action="store_true")
    p.add_argument("--period", default="")
    return p


_BILL_PARSER, _BUDGET_PARSER = _bill_parser(), _budget_parser()


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


class _Progress:
    """A one-line progress count for large transfers (shown past 16 MiB, at most ten times a second)."""

    def __init__(self, verb: str):
        self.verb, self.shown, self.last = verb, False, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total < (16 << 20) or (now - self.last < 0.1 and done < total):
            return
        self.last, self.shown = now, True
        print(f"\r{self.verb}: {done / (1 << 20):.0f} / {total / (1 << 20):.0f} MiB", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)


@magics_class
class GpuMagics(Magics):
    _reported = ""  # the last environment report shown (said once, not before every cell)

    @property
    def workspace(self):
        return get_workspace(self.shell.config if self.shell is not None else None)

    @magic_arguments("%%gpu")
    @kwds(description=DESCRIPTION, epilog=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    @argument("spec", nargs="?", default=None,
              help='GPU spec: "H100", "H100:2" (two on one host) or fallbacks "H100,A100"; default: the only type')
    @argument("--wait", type=float, default=0.0, metavar="S",
              help="seconds to queue for a free GPU (default 0: fail at once when none is free)")
    @argument("--push", default="", metavar="a,b", help="send these variables to the remote kernel first")
    @argument("--pull", default="", metavar="c,d", help="bring these variables back after the cell")
    @argument("--quiet", action="store_true", help="no cost footer")
    @argument("--sync", action="store_true",
              help="ship the notebook's pure-Python packages the host lacks, and the .py modules beside it")
    @argument("--strict", action="store_true", help="refuse to start if the host's packages differ")
    @argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set in the remote kernel")
    @argument("--secret", action="append", default=[], metavar="NAME",
              help="set NAME in the remote kernel from this notebook's environment or BURSTLAB_HOME/secrets.env; "
                   "redacted in what the cell shows")
    @argument("--sync-dir", default="", metavar="PATH",
              help="upload PATH into the session's work directory first (unchanged files are not resent)")
    @line_cell_magic
    def gpu(self, line: str, cell: str | None = None):
        """``%%gpu``: the cell on a remote GPU kernel; ``%gpu COMMAND``: sessions and the bill (replaced by the usage)."""
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    # -- %%gpu ----------------------------------------------------------------------------------

    def _default_spec(self) -> str:
        types = sorted({e.type for e in self.workspace.hosts()})
        if len(types) == 1:
            return types[0]
        if not types:
            raise BurstlabError(no_gpu_message(self.workspace.client))
        raise BurstlabError(f"%%gpu needs a GPU type: this workspace has {', '.join(types)} (e.g. %%gpu {types[0]}).")

    def _cell(self, line: str, cell: str):
        try:
            args = parse_argstring(self.gpu, line)  # the parser magic_arguments built once, at class creation
        except UsageError as exc:
            raise BurstlabError(f"%%gpu: {exc}.\n{self.gpu.parser.format_usage()}") from None
        ws = self.workspace
        since_ns = ws.meter.clock.now_ns()  # the cell's own share of its session is billed from here (_footer)
        spec = args.spec or self._default_spec()
        key = str(parse_gpu_spec(spec))
        note = ws.pop_ended(key)
        push = {}
        for name in _names(args.push):
            if name not in self.shell.user_ns:
                raise TransferError(f"--push {name}: no variable named {name!r} in this notebook.")
            push[name] = self.shell.user_ns[name]
        env = {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep:
                raise BurstlabError(f"%%gpu --env {item}: write it as NAME=VALUE.")
            env[name] = value
        environment = "strict" if args.strict else "sync" if args.sync else None
        try:
            session = ws.session(spec, wait=args.wait, env=env, secrets=args.secret, environment=environment)
        except BaseException:
            if note:  # said once, and never "starting a new one" when none starts
                print(f"[burstlab: the previous {key} session ended ({note}); its state is gone.]", file=sys.stderr)
            raise
        if note:
            print(f"[burstlab: the previous {key} session ended ({note}); its state is gone. This cell runs on a "
                  "new one.]", file=sys.stderr)
        if session.prepared is not None and session.prepared.report and session.prepared.report != self._reported:
            self._reported = session.prepared.report
            hint = "" if session.prepared.shipped or args.sync else f" Ship the pure ones with `%%gpu {key} --sync`."
            print(f"[burstlab: packages on {session.host} differ from this notebook's.{hint}]\n"
                  f"{session.prepared.report}", file=sys.stderr)
        if args.sync_dir:
            from burstlab.workspace import upload

            done = upload(session, args.sync_dir)
            print(f"[--sync-dir {args.sync_dir}: {done}]", file=sys.stderr)
        if push:
            session.push_sync(push)
        publish = Publisher()
        try:
            execution = self._run(session, cell, publish)
        except SessionLostError:
            stopped = ws.budget_stop(session)
            if stopped is not None:  # the budget watcher stopped it: say so, with the numbers
                raise stopped from None
            raise
        publish.finish()
        if execution.error is None and args.pull:
            self.shell.user_ns.update(session.pull_sync(_names(args.pull)))
        if not args.quiet:
            self._footer(session, since_ns)
        if execution.error is not None:
            e = execution.error
            raise RemoteError(e.ename, e.evalue, e.traceback)
        return publish.value

    def _run(self, session, code: str, publish: Publisher):
        """Execute on the remote kernel from this (the cell's) thread, publishing outputs as they come:
        ipykernel routes output by thread, and no hand-off between threads keeps a warm cell fast.

        Ctrl-C or the notebook's stop button interrupts the remote cell; the session stays usable.
        """
        return session.execute_sync(code, on_output=publish)

    def _footer(self, session, since_ns: int) -> None:
        """Where the cell ran, what the cell itself cost (the seconds its session was billed since ``since_ns``,
        at the ledger's rate) and its session so far: text in a terminal; in a notebook, a display whose
        ``CELL_MIME`` part the lab extension shows as a label under the cell and saves in the cell's metadata
        (``burstlab.ran``), with the same text as ``text/plain`` for every other frontend."""
        record = self.workspace.session_usage(session)
        if record is None:
            return
        until_ns = self.workspace.meter.clock.now_ns()
        ns, cost = cell_share(record, since_ns, until_ns)
        text = cell_footer(session, record, ns, cost)
        if getattr(self.shell, "kernel", None) is None:
            print(text)
            return
        from IPython.display import publish_display_data

        publish_display_data({"text/plain": text, CELL_MIME: cell_record(session, record, since_ns, until_ns)})

    # -- %gpu -----------------------------------------------------------------------------------

    def _line(self, line: str):
        words = shlex.split(line)
        if not words:
            print(USAGE)
            return None
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise BurstlabError(f"%gpu: unknown command {command!r}.\n{USAGE}")
        return handler(rest)

    def _cmd_hosts(self, rest):
        entries = self.workspace.hosts()
        if not entries:
            print(no_gpu_message(self.workspace.client))
            return
        print(table(["type", "host", "count", "free", "source"],
                    [[e.type, e.host, e.count, e.free, e.source] for e in entries]))
        iso = self.workspace.session_isolation()  # whether session kernels run in the session jail, and why
        print(f"Session kernels: {'isolated (session jail)' if iso.enabled else 'NOT isolated'}: {iso.reason}.")
        for s in list(self.workspace.sessions.values()):
            if s.state == "running" and s.lease.isolation:
                print(f"  {s.label} on {s.host}: {s.lease.isolation}")

    def _cmd_status(self, rest):
        ws = self.workspace
        rows = []
        now = time.monotonic()
        for s in list(ws.sessions.values()):
            record = ws.session_usage(s)
            rows.append([s.key, s.label, s.host, s.state, record.billed_s if record else 0,
                         money(record.cost_microusd) if record else "-", f"{now - s.last_active:.0f}s"])
        if not rows:
            print(f"No GPU sessions. Idle timeout: {ws.config.idle_timeout:g} s.")
            return
        print(table(["session", "gpus", "host", "state", "held s", "cost", "idle"], rows))
        print(f"Idle timeout: {ws.config.idle_timeout:g} s.")

    def _cmd_stop(self, rest):
        stopped = self.workspace.stop(rest[0] if rest else "all")
        print(f"Released: {', '.join(stopped)}." if stopped else "No GPU session was running.")

    def _show(self, report: Report) -> None:
        """HTML in a notebook, text in a terminal."""
        if getattr(self.shell, "kernel", None) is not None:
            from IPython.display import display

            display(report)
        else:
            print(report.text)

    def _cmd_bill(self, rest):
        args = _BILL_PARSER.parse_args(rest)
        ws = self.workspace
        since = None if args.days is None else ws.meter.clock.now_ns() - int(args.days * 86_400e9)
        mine = ws.usage(user=ws.user, since_ns=since)
        if args.csv:
            records = ws.usage(since_ns=since) if args.operator else mine
            n = write_csv(records, args.csv)
            print(f"Wrote {n} usage rows ({'all users' if args.operator else ws.user}) to {args.csv}.")
            return
        report = Report()
        here = [r for r in mine if r.notebook == ws.notebook]
        bill_section(report, here, f"This notebook ({ws.notebook}):", ("kind", "resource", "day"))
        bill_section(report, mine, f"User {ws.user}, all notebooks:", ("notebook", "kind", "resource", "day"))
        budgets = ws.budgets()
        if budgets:
            report.add("Budgets:", ["scope", "name", "limit", "spent", "left", "warn at", "state"],
                       [[b.scope, b.name, money(b.limit_microusd), money(b.spent_microusd),
                         money(b.remaining_microusd), f"{b.soft_fraction:.0%}", b.state] for b in budgets])
        if args.operator:
            everyone = ws.usage(since_ns=since)
            bill_section(report, everyone, "All users:", ("user", "kind", "resource"))
            days = args.days or 1.0
            until = ws.meter.clock.now_ns()
            util = ws.utilisation(until - int(days * 86_400e9), until)
            report.add(f"Utilisation, last {days:g} day{'s' if days != 1 else ''} (leased / provisioned GPU-seconds):",
                       ["GPU type", "leased s", "provisioned s", "utilisation"],
                       [[u.resource, f"{u.leased_s:.0f}", f"{u.provisioned_s:.0f}",
                         "-" if u.fraction is None else f"{u.fraction:.1%}"] for u in util])
        self._show(report)

    def _cmd_budget(self, rest):
        args = _BUDGET_PARSER.parse_args(rest)
        ws = self.workspace
        scope, name = ("user", ws.user) if args.user else ("notebook", ws.notebook)
        if args.remove:
            removed = ws.remove_budget(scope, name)
            print(f"Removed the {scope} budget for {name!r}." if removed else f"There was no {scope} budget for {name!r}.")
            return
        if args.amount is not None:
            try:
                status = ws.set_budget(scope, name, args.amount.lstrip("$"), args.soft, period=args.period)
            except ValueError as exc:
                raise BurstlabError(f"%gpu budget: {exc}") from None
            print(f"{scope.capitalize()} budget for {name!r}: {money(status.limit_microusd)} "
                  f"({money(status.spent_microusd)} spent, {money(status.remaining_microusd)} left; warns at "
                  f"{status.soft_fraction:.0%}, stops running cells and maps at the limit).")
            return
        budgets = ws.budgets()
        if not budgets:
            print("No budgets. Set one for this notebook with `%gpu budget 5` (dollars), or for you with "
                  "`%gpu budget --user 50`.")
            return
        print(table(["scope", "name", "limit", "spent", "left", "warn at", "state"],
                    [[b.scope, b.name, money(b.limit_microusd), money(b.spent_microusd), money(b.remaining_microusd),
                      f"{b.soft_fraction:.0%}", b.state] for b in budgets]))

    def _cmd_idle(self, rest):
        if len(rest) != 1:
            raise BurstlabError("%gpu idle SECONDS: release idle sessions after SECONDS (0 disables).")
        try:
            seconds = float(rest[0])
        except ValueError:
            raise BurstlabError(f"%gpu idle: {rest[0]!r} is not a number of seconds.") from None
        self.workspace.set_idle_timeout(seconds)
        print(f"Idle GPU sessions are released after {seconds:g} s." if seconds > 0 else "Idle release is off.")

    def _cmd_push(self, rest):
        if not rest:
            raise BurstlabError("%gpu push NAMES [SPEC]: e.g. %gpu push a,b H100")
        values = {}
        for name in _names(rest[0]):
            if name not in self.shell.user_ns:
                raise TransferError(f"%gpu push {name}: no variable named {name!r} in this notebook.")
            values[name] = self.shell.user_ns[name]
        self.workspace.find(rest[1] if len(rest) > 1 else None).push_sync(values)

    def _cmd_upload(self, rest):
        self._transfer("upload", rest)

    def _cmd_download(self, rest):
        self._transfer("download", rest)

    def _transfer(self, verb: str, rest):
        """``%gpu upload PATH [--to DIR] [SPEC]`` / ``%gpu download PATH [--to PATH] [SPEC]``."""
        from burstlab import workspace as files  # upload/download, from remote_kernel through the workspace

        to = None
        if "--to" in rest:
            i = rest.index("--to")
            if i + 1 >= len(rest):
                raise BurstlabError(f"%gpu {verb} PATH --to DIR: --to needs a path.")
            to, rest = rest[i + 1], rest[:i] + rest[i + 2:]
        if not rest or len(rest) > 2:
            raise BurstlabError(f"%gpu {verb} PATH [--to DIR] [SPEC]: e.g. %gpu {verb} data/ H100")
        session = self.workspace.find(rest[1] if len(rest) > 1 else None)
        progress = _Progress(verb)
        done = getattr(files, verb)(session, rest[0], to, progress=progress)
        progress.close()
        print(f"{verb.capitalize()}ed {done}{' to' if verb == 'upload' else ' from'} {session.label} on {session.host}.")

    def _cmd_pull(self, rest):
        if not rest:
            raise BurstlabError("%gpu pull NAMES [SPEC]: e.g. %gpu pull c,d H100")
        session = self.workspace.find(rest[1] if len(rest) > 1 else None)
        self.shell.user_ns.update(session.pull_sync(_names(rest[0])))


__all__ = ["GpuMagics"]
