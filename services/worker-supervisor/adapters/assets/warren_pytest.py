#!/usr/bin/env python3
"""warren_pytest.py: Warren's pytest adapter (see ../EVENTS.md for the events protocol).

    cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl python3 /abs/warren_pytest.py discover
    cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids python3 /abs/warren_pytest.py run

Runs the suite's own pytest in-process (``pytest.main(args, plugins=[plugin])``), so the
suite's configuration applies as with a plain ``pytest`` run: pytest.ini / pyproject.toml /
tox.ini / setup.cfg (testpaths, python_files, addopts, markers, pythonpath, ...), conftest.py
files, installed plugins. The current directory is put on sys.path first, as
``python -m pytest`` does (instead of this script's own directory).

Ids, files, names
- id: the pytest node id with its file part relative to the suite directory (the cwd), e.g.
  ``tests/test_x.py::TestC::test_m[param-1]``. When pytest's rootdir is the suite directory
  (the config file lives there) this is exactly pytest's ``nodeid``.
- file: the path part of the id (``tests/test_x.py``).
- name: the id without its file part (``TestC::test_m[param-1]``, ``test_f``).
- A file whose collection fails (import error, syntax error, error in a class or a
  parametrize call, ...) is listed by discovery as a test whose id is the file itself, name
  ``<file> (failed to collect)``, plus an ``error`` event with ``file``. A file skipped as a
  whole at collection (``pytest.skip(allow_module_level=True)``, ``pytest.importorskip``),
  which pytest counts as one skipped entry, is listed the same way, name
  ``<file> (skipped at collection)``, and reported ``pending`` by run.

Discovery (``discover``): ``--collect-only``; the items are those of
``pytest_collection_finish`` (after the suite's own -k / -m / --deselect and plugins).

Run (``run``): the ids come from WARREN_IDS_FILE, one per line. pytest is given the files of
the ids (never the ids themselves: a node id is not always a valid pytest argument -- ``::``
inside a parameter id --, and one id not found would abort the whole session with a usage
error) and our plugin keeps exactly the requested items (``pytest_collection_modifyitems``,
trylast; the others are reported to pytest as deselected). A file id runs the whole file and
is reported as one test (failed if any of its tests failed). ``--continue-on-collection-errors``
is added, so a broken file in the batch costs only its own tests. The ids are the selection:
at run time -k, -m, --deselect, --lf/--ff/--nf, --sw and --collect-only of the suite's
options are switched off. In both modes -x/--maxfail, --pdb/--trace and pytest-xdist
(-n/--dist/--tx) are switched off: Warren is the one that bails out and spreads work.

Per test: ``test_start`` at pytest_runtest_logstart, ``test_end`` at pytest_runtest_logfinish
from the setup/call/teardown reports:
- any phase failed -> ``failed``; message ``ExcType: first line of the message`` (the
  exception as raised: ``AssertionError: assert 2 == 3``, ``Failed: why`` for pytest.fail)
  with `` (in setup)`` / `` (in teardown)`` appended when that phase failed first; a strict
  XPASS has pytest's own ``[XPASS(strict)] reason``; details = pytest's longrepr text of
  every failed phase plus the captured output / log sections.
- skipped (mark, pytest.skip, skipif) -> ``pending`` (message ``Skipped: reason``);
  xfail -> ``pending`` (message ``XFAIL: reason``); a non-strict XPASS -> ``passed``.
- durationMs: the sum of the phases' durations (as pytest and its junitxml count them).
- with pytest-rerunfailures, a ``rerun`` report starts the test over.

A requested test that pytest did not collect is reported failed (WarrenTestNotFound) unless
its file failed to collect (the file's ``error`` event accounts for it). A test that pytest
never reached (the session stopped early: pytest.exit(), KeyboardInterrupt) gets no event,
except the one that was running, reported failed: Warren runs the unreported ones again.

Events are written with os.write on an O_APPEND descriptor (one write per line, nothing
buffered) that is not stdout/stderr, is closed on exec, and is written only by this process
(not a forked child): pytest's own output, captured or not, goes to stdout/stderr as usual.

Exit codes: discover 0 when collection completed (collection errors are events); run 0 when
every test passed or was pending and no ``error`` event was written, 1 otherwise; 2 when the
adapter itself could not work (pytest missing, bad configuration, conftest.py failing to
import, ...).
"""
import json
import os
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else None
CWD = os.getcwd()
PROG = "warren_pytest"

# Run like `python -m pytest`: the suite directory first on sys.path, not this script's.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = CWD
elif CWD not in sys.path:
    sys.path.insert(0, CWD)

# --------------------------------------------------------------------------- events

_events_fd = None
_pid = os.getpid()
_state = {"finished": False, "any_failure": False}


def open_events():
    global _events_fd
    path = os.environ.get("WARREN_EVENTS")
    if not path:
        sys.stderr.write(PROG + ": WARREN_EVENTS is not set (path of the events file to append to)\n")
        sys.exit(2)
    try:
        fd = os.open(os.path.abspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        sys.stderr.write("%s: cannot open WARREN_EVENTS %s: %s\n" % (PROG, path, e))
        sys.exit(2)
    if fd <= 2:
        # started with stdin/stdout/stderr closed: keep clear of the descriptors pytest's
        # output capture redirects
        import fcntl

        new = fcntl.fcntl(fd, getattr(fcntl, "F_DUPFD_CLOEXEC", fcntl.F_DUPFD), 3)
        os.close(fd)
        fd = new
    os.set_inheritable(fd, False)
    _events_fd = fd


def emit(ev):
    if os.getpid() != _pid:
        return  # a test forked and its child went on running pytest code: not ours to report
    if ev.get("event") == "error" or (ev.get("event") == "test_end" and ev.get("status") == "failed"):
        _state["any_failure"] = True
    data = (json.dumps(ev, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    if _events_fd is None:
        sys.stderr.write("[%s] (no events file) %s" % (PROG, data.decode("utf-8")))
        return
    while data:
        n = os.write(_events_fd, data)
        data = data[n:]


def fatal(message, details=None):
    ev = {"event": "error", "message": PROG + ": " + message}
    if details:
        ev["details"] = details
    emit(ev)
    _state["finished"] = True
    sys.stderr.write(ev["message"] + "\n" + (details + "\n" if details else ""))
    sys.stderr.flush()
    sys.exit(2)


# --------------------------------------------------------------------------- helpers


def rel(path):
    """A path relative to the suite directory, '/'-separated, no leading './'."""
    r = os.path.relpath(os.path.abspath(str(path)), CWD)
    r = r.replace(os.sep, "/")
    while r.startswith("./"):
        r = r[2:]
    return r


def split_id(test_id):
    """'tests/a.py::C::t[x]' -> ('tests/a.py', 'C::t[x]'); a file id -> (file, None)."""
    i = test_id.find("::")
    if i < 0:
        return test_id, None
    return test_id[:i], test_id[i + 2:]


def node_path(node):
    p = getattr(node, "path", None)
    if p is None:
        p = getattr(node, "fspath", None)
    return p


def item_id(item):
    """The id of an item: its file relative to the cwd + the rest of its node id."""
    nodeid = item.nodeid
    p = node_path(item)
    if p is None:
        return nodeid
    i = nodeid.find("::")
    if i < 0:
        return nodeid
    return rel(p) + nodeid[i:]


def type_name(t):
    """How Python's traceback names an exception type (builtins and __main__ unqualified)."""
    try:
        name = t.__qualname__
        mod = t.__module__
    except Exception:
        return "Exception"
    # pytest's own outcome types (Exit, Skipped, Failed, XFailed) print unqualified, as in its output
    if mod not in ("builtins", "__main__", None) and not str(mod).startswith("_pytest."):
        name = mod + "." + name
    return name


def first_line(text):
    for line in str(text).split("\n"):
        line = line.rstrip()
        if line.strip():
            return line
    return ""


def exception_message(exc):
    """'ExcType: first line of the message' (just 'ExcType' for an empty message)."""
    name = type_name(type(exc))
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable %s object>" % name
    line = first_line(text)
    return name + ": " + line if line else name


def collect_error_message(excinfo):
    """The message of a collection failure: the import/syntax error behind pytest's CollectError."""
    exc = excinfo.value
    if type(exc).__name__ == "CollectError":
        cause = exc.__cause__
        if isinstance(cause, (ImportError, SyntaxError)):
            return exception_message(cause)
        arg = exc.args[0] if exc.args else ""
        line = first_line(arg if isinstance(arg, str) else str(arg))
        return "CollectError: " + line if line else "CollectError"
    return exception_message(exc)


def longrepr_message(report):
    """Fallback message from a report's longrepr (no exception at hand)."""
    lr = report.longrepr
    crash = getattr(lr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return first_line(crash.message)
    if isinstance(lr, tuple) and len(lr) == 3:
        return first_line(lr[2])
    return first_line(str(lr)) if lr is not None else ""


MAX_SECTION = 20000


def report_details(reports):
    """pytest's failure text of every failed phase, then the captured sections."""
    parts = []
    for r in reports:
        if r.failed:
            text = r.longreprtext
            if text:
                parts.append(("" if r.when == "call" else "[%s]\n" % r.when) + text)
    seen = set()
    for r in reports:
        for title, content in getattr(r, "sections", []) or []:
            if (title, content) in seen or not content:
                continue
            seen.add((title, content))
            if len(content) > MAX_SECTION:
                content = "... (%d characters cut)\n" % (len(content) - MAX_SECTION) + content[-MAX_SECTION:]
            parts.append("----- %s -----\n%s" % (title, content.rstrip("\n")))
    return "\n\n".join(parts)


def skip_message(report):
    if hasattr(report, "wasxfail"):
        reason = report.wasxfail or ""
        return "XFAIL: " + reason if reason else "XFAIL"
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return first_line(lr[2])
    return longrepr_message(report) or "Skipped"


def read_ids():
    path = os.environ.get("WARREN_IDS_FILE")
    if not path:
        fatal("WARREN_IDS_FILE is not set (run mode needs the ids to run, one per line)")
    try:
        with open(path, "r", encoding="utf-8", newline="") as f:
            text = f.read()
    except OSError as e:
        fatal("cannot read WARREN_IDS_FILE %s: %s" % (path, e))
    ids = []
    for line in text.split("\n"):
        line = line[:-1] if line.endswith("\r") else line
        if line.strip() and line not in ids:
            ids.append(line)
    return ids


# normalised id -> the id exactly as requested (events carry the requested id)
REQUESTED_AS = {}


def normalise_id(test_id):
    f, rest = split_id(test_id)
    f = rel(os.path.join(CWD, f))
    norm = f if rest is None else f + "::" + rest
    REQUESTED_AS.setdefault(norm, test_id)
    return norm


# --------------------------------------------------------------------------- plugin

def make_plugin(pytest, mode, requested):
    hookimpl = pytest.hookimpl

    class WarrenPlugin:
        def __init__(self):
            self.collected = False  # pytest_collection_finish was reached
            self.session_started = False
            self.items = []  # discovery: the items, in pytest's order
            self.collect_errors = []  # [(file, message, details)] in order
            self.collect_skips = []  # [(file, message)] module-level skips
            self.error_files = set()
            self.skipped_files = {}
            self.interrupt = None  # why pytest stopped early (pytest.exit, KeyboardInterrupt)
            self.exc_messages = {}  # (nodeid, when) -> 'ExcType: first line'
            # run mode
            self.requested = requested or []
            self.recs = {}  # id -> rec
            self.by_nodeid = {}  # nodeid -> rec (or file rec for whole-file ids)
            self.deselected_by_others = set()
            self._deselecting = False

        # ---- options that are the runner's business, not the suite's

        @hookimpl(tryfirst=True)
        def pytest_cmdline_main(self, config):
            opt = config.option

            def off(name, value):
                if hasattr(opt, name):
                    setattr(opt, name, value)

            off("maxfail", 0)  # -x / --maxfail: every requested test runs
            off("usepdb", False)
            off("trace", False)
            # pytest-xdist: Warren is the one spreading the tests
            off("numprocesses", 0)
            off("dist", "no")
            off("tx", [])
            off("looponfail", False)
            if mode == "run":
                # the ids are the selection
                off("keyword", "")
                off("markexpr", "")
                off("deselect", [])
                off("lf", False)
                off("failedfirst", False)
                off("newfirst", False)
                off("stepwise", False)
                off("stepwise_skip", False)
                off("collectonly", False)
                off("continue_on_collection_errors", True)
            return None

        def pytest_sessionstart(self, session):
            self.session_started = True
            if mode == "run":
                emit({"event": "start", "count": len(self.requested)})

        # ---- collection

        @hookimpl(hookwrapper=True)
        def pytest_make_collect_report(self, collector):
            outcome = yield
            try:
                rep = outcome.get_result()
            except BaseException:
                return
            if rep.passed:
                return
            p = node_path(collector)
            f = rel(p) if p is not None else (rep.nodeid.split("::")[0] or ".")
            call = getattr(rep, "call", None)  # set by pytest's own implementation
            excinfo = getattr(call, "excinfo", None)
            if rep.failed:
                msg = collect_error_message(excinfo) if excinfo is not None else longrepr_message(rep) or "collection failed"
                details = rep.longreprtext
                self.collect_errors.append((f, msg, details))
                self.error_files.add(f)
                if mode == "run":
                    emit({"event": "error", "message": "failed to collect %s: %s" % (f, msg), "details": details, "file": f})
            elif rep.skipped:
                msg = skip_message(rep)
                self.collect_skips.append((f, msg))
                self.skipped_files.setdefault(f, msg)

        def pytest_deselected(self, items):
            if self._deselecting:
                return
            for it in items:
                self.deselected_by_others.add(item_id(it))

        @hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, session, config, items):
            if mode != "run":
                return
            by_id = {}
            for it in items:
                by_id.setdefault(item_id(it), it)
            whole = {}  # file -> file rec
            for tid in self.requested:
                f, rest = split_id(tid)
                if rest is None:
                    rec = new_rec(tid, f, f + " (whole file)")
                    rec["whole"] = True
                    rec["pending_items"] = 0
                    rec["outcomes"] = []
                    whole[f] = rec
                    self.recs[tid] = rec
            keep = []
            dropped = []
            for it in items:
                tid = item_id(it)
                rec = None
                if tid in self.recs:
                    rec = None  # duplicate node id: the first one only
                elif tid in requested_set:
                    f, rest = split_id(tid)
                    rec = new_rec(tid, f, rest)
                    self.recs[tid] = rec
                    self.by_nodeid[it.nodeid] = rec
                else:
                    f = split_id(tid)[0]
                    if f in whole and it.nodeid not in self.by_nodeid:
                        rec = whole[f]
                        rec["pending_items"] += 1
                        self.by_nodeid[it.nodeid] = rec
                (keep if rec is not None else dropped).append(it)
            if dropped:
                self._deselecting = True
                try:
                    config.hook.pytest_deselected(items=dropped)
                finally:
                    self._deselecting = False
            items[:] = keep
            # requested but not collected
            for tid in self.requested:
                if tid in self.recs:
                    continue
                f, rest = split_id(tid)
                rec = new_rec(tid, f, rest)
                self.recs[tid] = rec
                if f in self.error_files:
                    continue  # the file's `error` event accounts for it
                if f in self.skipped_files:
                    end_rec(rec, "pending", 0, self.skipped_files[f])
                elif tid in self.deselected_by_others:
                    end_rec(rec, "failed", 0, "WarrenTestNotRun: deselected by a pytest plugin of the suite")
                elif not os.path.exists(os.path.join(CWD, f)):
                    end_rec(rec, "failed", 0, "WarrenTestNotFound: %s does not exist (renamed or removed since discovery)" % f)
                else:
                    end_rec(rec, "failed", 0, "WarrenTestNotFound: test not found in %s (renamed or removed since "
                                             "discovery, or parametrized differently)" % f)

        def pytest_collection_finish(self, session):
            self.collected = True
            if mode == "discover":
                self.items = list(session.items)
                return
            # whole-file ids: skipped at collection, or nothing to run
            for rec in list(self.recs.values()):
                if not rec.get("whole") or rec["ended"]:
                    continue
                f = rec["file"]
                if f in self.error_files:
                    continue
                if f in self.skipped_files:
                    end_rec(rec, "pending", 0, self.skipped_files[f])
                elif rec["pending_items"] == 0:
                    if os.path.exists(os.path.join(CWD, f)):
                        end_rec(rec, "failed", 0, "WarrenTestNotFound: no tests collected from %s" % f)
                    else:
                        end_rec(rec, "failed", 0, "WarrenTestNotFound: %s does not exist (renamed or removed since discovery)" % f)

        # ---- running

        def pytest_runtest_logstart(self, nodeid, location):
            rec = self.by_nodeid.get(nodeid)
            if rec is not None:
                start_rec(rec)
                rec["item_reports"] = []

        @hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            outcome = yield
            try:
                rep = outcome.get_result()
            except BaseException:
                return
            if rep.failed and call.excinfo is not None:
                try:
                    self.exc_messages[(item.nodeid, rep.when)] = exception_message(call.excinfo.value)
                except Exception:
                    pass

        def pytest_runtest_logreport(self, report):
            rec = self.by_nodeid.get(report.nodeid)
            if rec is None:
                return
            if report.outcome == "rerun":  # pytest-rerunfailures: this attempt does not count
                rec["item_reports"] = []
                return
            rec.setdefault("item_reports", []).append(report)

        def pytest_runtest_logfinish(self, nodeid, location):
            rec = self.by_nodeid.get(nodeid)
            if rec is None or rec["ended"]:
                return
            reports = rec.pop("item_reports", [])
            status, duration, message, details = self.outcome(nodeid, reports)
            if rec.get("whole"):
                rec["outcomes"].append((nodeid, status, duration, message, details))
                rec["pending_items"] -= 1
                if rec["pending_items"] <= 0:
                    self.end_whole(rec)
            else:
                end_rec(rec, status, duration, message, details)

        def outcome(self, nodeid, reports):
            duration = sum(getattr(r, "duration", 0) or 0 for r in reports) * 1000
            failed = [r for r in reports if r.failed]
            if failed:
                first = failed[0]
                message = self.exc_messages.get((nodeid, first.when))
                if message is None:
                    message = longrepr_message(first) or "failed"
                if first.when != "call":
                    message += " (in %s)" % first.when
                return "failed", duration, message, report_details(reports)
            skipped = [r for r in reports if r.skipped]
            if skipped:
                return "pending", duration, skip_message(skipped[0]), None
            if not reports:
                return "failed", duration, "WarrenTestNotRun: pytest reported no outcome for this test", None
            return "passed", duration, None, None

        def end_whole(self, rec):
            if rec["file"] in self.error_files:
                return
            outs = rec["outcomes"]
            duration = sum(o[2] for o in outs)
            failed = [o for o in outs if o[1] == "failed"]
            if failed:
                nodeid, _, _, message, _ = failed[0]
                details = "\n\n".join("%s: %s\n%s" % (o[0], o[3], o[4] or "") for o in failed)
                end_rec(rec, "failed", duration, "%d of %d tests failed, first %s: %s" % (len(failed), len(outs), nodeid, message), details)
            elif outs and all(o[1] == "pending" for o in outs):
                end_rec(rec, "pending", duration, "all %d tests pending" % len(outs))
            else:
                end_rec(rec, "passed", duration)

        def pytest_keyboard_interrupt(self, excinfo):
            try:
                self.interrupt = exception_message(excinfo.value)
            except Exception:
                self.interrupt = "interrupted"

    requested_set = set(requested or [])

    def new_rec(tid, f, name):
        return {"id": REQUESTED_AS.get(tid, tid), "file": f, "name": name if name is not None else f, "started": False, "ended": False}

    def start_rec(rec):
        if rec["started"]:
            return
        rec["started"] = True
        emit({"event": "test_start", "id": rec["id"], "file": rec["file"], "name": rec["name"]})

    def end_rec(rec, status, duration_ms, message=None, details=None):
        if rec["ended"]:
            return
        start_rec(rec)
        rec["ended"] = True
        ev = {"event": "test_end", "id": rec["id"], "file": rec["file"], "name": rec["name"], "status": status,
              "durationMs": int(round(duration_ms or 0))}
        if message:
            ev["message"] = message
        if details:
            ev["details"] = details
        emit(ev)

    plugin = WarrenPlugin()
    plugin.end_rec = end_rec
    return plugin


# --------------------------------------------------------------------------- modes


def discover(pytest):
    plugin = make_plugin(pytest, "discover", None)
    code = pytest.main(["--collect-only"], plugins=[plugin])
    code = int(code)
    if not plugin.collected or code not in (0, 2, 5) or (code == 2 and not plugin.collect_errors):
        fatal("pytest could not collect the suite (exit code %d%s); see its output above" %
              (code, ", " + plugin.interrupt if plugin.interrupt else ""))
    tests = []
    seen = set()
    for it in plugin.items:
        tid = item_id(it)
        if tid in seen:
            continue
        seen.add(tid)
        f, rest = split_id(tid)
        tests.append({"event": "test", "id": tid, "file": f, "name": rest if rest is not None else tid})
    errors = []
    for f, msg, details in plugin.collect_errors:
        if f not in seen:
            seen.add(f)
            tests.append({"event": "test", "id": f, "file": f, "name": f + " (failed to collect)"})
        ev = {"event": "error", "message": "failed to collect %s: %s" % (f, msg), "file": f}
        if details:
            ev["details"] = details
        errors.append(ev)
    for f, msg in plugin.collect_skips:
        if f not in seen:
            seen.add(f)
            tests.append({"event": "test", "id": f, "file": f, "name": f + " (skipped at collection)"})
    emit({"event": "start", "count": len(tests)})
    for t in tests:
        emit(t)
    for e in errors:
        emit(e)
    emit({"event": "done"})
    _state["finished"] = True
    return 0


def run(pytest):
    ids = [normalise_id(i) for i in read_ids()]
    files = []
    for tid in ids:
        f = split_id(tid)[0]
        if f not in files:
            files.append(f)
    # missing files are not given to pytest (it would abort the session): reported not found
    args = [f for f in files if os.path.exists(os.path.join(CWD, f))]
    plugin = make_plugin(pytest, "run", ids)
    if not args:
        emit({"event": "start", "count": len(ids)})
        for tid in ids:
            f, rest = split_id(tid)
            plugin.end_rec({"id": REQUESTED_AS.get(tid, tid), "file": f, "name": rest if rest is not None else f, "started": False, "ended": False},
                           "failed", 0, "WarrenTestNotFound: %s does not exist (renamed or removed since discovery)" % f)
        emit({"event": "done"})
        _state["finished"] = True
        return 1
    code = int(pytest.main(["--continue-on-collection-errors", "--"] + args, plugins=[plugin]))
    if not plugin.session_started:
        fatal("pytest could not start (exit code %d: usage error, bad configuration or a conftest.py "
              "failing to import); see its output above" % code)
    # the test that was running when pytest stopped (pytest.exit(), KeyboardInterrupt)
    for rec in plugin.recs.values():
        if rec["started"] and not rec["ended"]:
            why = plugin.interrupt or "pytest stopped (exit code %d)" % code
            plugin.end_rec(rec, "failed", 0, "WarrenTestNotFinished: pytest stopped while this test was running: " + why)
    emit({"event": "done"})
    _state["finished"] = True
    return 1 if _state["any_failure"] else 0


def main():
    open_events()
    if MODE not in ("discover", "run"):
        fatal("usage: python warren_pytest.py discover|run (got %r)" % (MODE,))
    try:
        import pytest
    except ImportError as e:
        fatal("cannot import pytest with %s (%s): install pytest for this interpreter, or point "
              "WARREN_PYTHON at one that has it (or create the suite's .venv)" % (sys.executable, e))
    major = int(str(pytest.__version__).split(".")[0] or 0)
    if major < 7:
        fatal("pytest %s is too old for this adapter (needs pytest >= 7)" % pytest.__version__)
    try:
        code = discover(pytest) if MODE == "discover" else run(pytest)
    except SystemExit:
        raise
    except BaseException as e:  # a bug of ours, or an exception pytest.main let through
        import traceback

        fatal("unexpected failure: " + exception_message(e), traceback.format_exc())
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    try:
        main()
    finally:
        if not _state["finished"] and _events_fd is not None and os.getpid() == _pid:
            try:
                emit({"event": "error", "message": PROG + ": the process exited before pytest finished"})
            except Exception:
                pass
