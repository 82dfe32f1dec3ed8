#!/usr/bin/env python3
"""warren_pytest.py: Warren's pytest adapter (see ../PROTOCOL.md for the events protocol).

    cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl python3 /abs/warren_pytest.py discover
    cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids python3 /abs/warren_pytest.py run
    cd <suite dir> && python3 /abs/warren_pytest.py serve    (commands on stdin, see "Serve")

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
options are switched off. In every mode -x/--maxfail, --pdb/--trace and pytest-xdist
(-n/--dist/--tx) are switched off: Warren is the one that bails out and spreads work. The
items are run by our ``pytest_runtestloop``, the same loop as pytest's own (and as one batch
of ``serve``): ``pytest_runtest_protocol(item, nextitem)``, stopping when the session asks to.

Serve (``serve``, the warm runner of PROTOCOL.md), as pytest-xdist's workers do: ONE pytest
session per process, started at the first command (so that a configuration, conftest.py or
collection error lands in that batch's events file, as in run mode). It collects the whole
suite once, as discovery does (no file arguments: ``testpaths``, else the rootdir), with the
options of run mode (-k/-m/... off, --continue-on-collection-errors); then our
``pytest_runtestloop`` reads the commands (``{"cmd":"run","batch":n,"events":file,"ids":[...]}``
one JSON line each) and runs each batch's items in the order run mode's pytest would (file by
file in the order of the batch's ids, each file's items in collection order; the collection
order itself when a plugin of the suite interleaved files) with
``pytest_runtest_protocol(item=item, nextitem=...)``, nextitem the next item of the batch and
None for its last: at the end of every batch all fixtures (session, package, module and class
scoped, xunit setup_module/setup_class) are torn down exactly as at the end of a session, and
the next batch sets them up again, as a cold process would (xdist tears down only at the very
end). Per batch the events are run mode's (``start``, collection errors of the batch's files or
their directories, not-found ids, the tests, ``done``) and then ``end`` with the code run mode
would have exited with and this process's resident memory. Between batches: the working
directory is set back to the suite directory, session.shouldstop/shouldfail/testsfailed reset;
an item run again (Warren re-runs) gets back its markers, keywords and user_properties as
collected (a marker applied at run time does not stay), a fresh test-class instance, its
doctest's globals, and no report sections of its earlier run. Not reset (as in any pytest
session and in xdist): imported modules and their globals, os.environ, sys.path.
- pytest.exit() in a batch: the batch ends as run mode's process would (the running test
  failed "WarrenTestNotFinished", ``done``), what was set up is torn down, and the runner
  serves the next batch. KeyboardInterrupt, or an internal error of pytest or of a plugin:
  the batch ends the same way, then the session finishes and the process exits (1): the slot
  starts a fresh runner.
- pytest that cannot start (bad configuration, conftest.py failing to import, no pytest):
  run mode's ``error`` event (no ``done``) then ``end`` code 1, and the same for every later
  batch (remembered; the process stays up until end of stdin).
- End of stdin: the session finishes normally (sessionfinish hooks, cache, terminal summary)
  and the process exits 0.
- The commands are read from a private duplicate of the original stdin; descriptor 0 (and
  sys.stdin) become /dev/null, as a cold run process's stdin is, so that a test (or a child
  process) reading stdin never eats a command. A forked child never reads commands.
- The terminal output of pytest (stdout) is that of one long session, plus a line of ours at
  the end of every batch (then stdout is flushed, before ``end``); the terminal reporter's
  stats are cleared after each batch (else every report of the runner's life is kept, and the
  summary at end of stdin lists every failure ever: seconds, past the slot's grace), so that
  final summary covers the last batch only.

Cache: when WARREN_CACHE_DIR is set (every mode) and the suite chooses no ``cache_dir`` (none in
its config file, none given with -o, the cacheprovider plugin enabled), pytest's cache
(--lf, --nf, stepwise, config.cache) is ``$WARREN_CACHE_DIR/pytest`` instead of
``<rootdir>/.pytest_cache``: the lowest-precedence value, as if pytest's default were that.

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
import, ...); serve 0 at end of stdin, 1 when it stopped serving on its own (above), 2 when
it cannot read its commands or open a batch's events file.

Checked with pytest 7.2 (Debian's python3-pytest), 8.4 and 9.0.
"""
import json
import os
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else None
CWD = os.getcwd()
PROG = "warren_pytest"


def suite_args():
    """The project's own pytest options and paths (its test command's: WARREN_FRAMEWORK_ARGS,
    a JSON array of strings, PROTOCOL.md), given to pytest.main as its command line would."""
    text = os.environ.get("WARREN_FRAMEWORK_ARGS")
    if not text:
        return []
    args = json.loads(text)
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("WARREN_FRAMEWORK_ARGS is not a JSON array of strings")
    return args


SUITE_ARGS = suite_args()

# Run like `python -m pytest`: the suite directory first on sys.path, not this script's.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = CWD
elif CWD not in sys.path:
    sys.path.insert(0, CWD)

# --------------------------------------------------------------------------- events

_events_fd = None
_pid = os.getpid()
_state = {"finished": False, "any_failure": False}


def _open_append(path):
    """An O_APPEND, close-on-exec descriptor above 2 on `path` (created when missing)."""
    fd = os.open(os.path.abspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    if fd <= 2:
        # started with stdin/stdout/stderr closed: keep clear of the descriptors pytest's
        # output capture redirects
        import fcntl

        new = fcntl.fcntl(fd, getattr(fcntl, "F_DUPFD_CLOEXEC", fcntl.F_DUPFD), 3)
        os.close(fd)
        fd = new
    os.set_inheritable(fd, False)
    return fd


def open_events():
    global _events_fd
    path = os.environ.get("WARREN_EVENTS")
    if not path:
        sys.stderr.write(PROG + ": WARREN_EVENTS is not set (path of the events file to append to)\n")
        sys.exit(2)
    try:
        _events_fd = _open_append(path)
    except OSError as e:
        sys.stderr.write("%s: cannot open WARREN_EVENTS %s: %s\n" % (PROG, path, e))
        sys.exit(2)


def retarget(path):
    """serve: the events go to another file (a batch's); the batch's state starts afresh."""
    global _events_fd
    try:
        fd = _open_append(path)
    except OSError as e:
        sys.stderr.write("%s: cannot open the events file %s of a batch: %s\n" % (PROG, path, e))
        sys.stderr.flush()
        os._exit(2)  # cannot speak the protocol any more: the slot replaces this runner
    if _events_fd is not None:
        try:
            os.close(_events_fd)
        except OSError:
            pass
    _events_fd = fd
    _state["finished"] = False
    _state["any_failure"] = False


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


def rss_bytes():
    """This process's resident memory now (peak as a fallback where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except Exception:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except Exception:
        return None


# --------------------------------------------------------------------------- commands (serve)

_commands = None  # a binary reader on a private duplicate of the original stdin


def take_stdin():
    """Keeps the original stdin for the commands; descriptor 0 becomes /dev/null."""
    global _commands
    try:
        fd = os.dup(0)  # not inheritable
    except OSError:
        fd = None  # started without stdin: no command will ever come
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
    except OSError:
        pass
    _commands = os.fdopen(fd, "rb") if fd is not None else None


def read_command():
    """The next run command, or None at end of stdin (never in a forked child)."""
    while True:
        if _commands is None or os.getpid() != _pid:
            return None
        try:
            line = _commands.readline()
        except (OSError, ValueError):
            return None
        if not line:
            return None
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            sys.stderr.write("%s: a command that is not JSON: %s\n" % (PROG, line[:200].decode("utf-8", "replace")))
            continue
        if (not isinstance(cmd, dict) or cmd.get("cmd") != "run" or not isinstance(cmd.get("events"), str)
                or not isinstance(cmd.get("ids"), list)):
            sys.stderr.write("%s: unknown command: %s\n" % (PROG, line[:200].decode("utf-8", "replace")))
            continue
        return cmd


def end_batch(number):
    """serve: `end` closes the batch (its code: what run mode would have exited with)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    code = 1 if _state["any_failure"] else 0
    _state["finished"] = True
    ev = {"event": "end", "batch": number, "code": code}
    rss = rss_bytes()
    if rss is not None:
        ev["rss"] = rss
    emit(ev)


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


def concerns(f, files):
    """Whether a collection error of `f` (a file or a directory) is one of a batch of `files`."""
    if f in ("", "."):
        return True
    prefix = f.rstrip("/") + "/"
    return any(bf == f or bf.startswith(prefix) for bf in files)


def collect_error_event(f, msg, details):
    return {"event": "error", "message": "failed to collect %s: %s" % (f, msg), "details": details, "file": f, "load": True}


# --------------------------------------------------------------------------- batches


class Batch:
    """The ids of one run (run mode) or one command (serve), and what they became."""

    def __init__(self, number, raw_ids):
        self.number = number
        self.requested = []  # normalised ids, each once, in order
        self.as_requested = {}  # normalised id -> the id exactly as requested (events carry it)
        for test_id in raw_ids:
            f, rest = split_id(test_id)
            f = rel(os.path.join(CWD, f))
            norm = f if rest is None else f + "::" + rest
            if norm not in self.as_requested:
                self.as_requested[norm] = test_id
                self.requested.append(norm)
        self.requested_set = set(self.requested)
        self.count = len(raw_ids)  # `start`'s count: the ids as given (as run mode always said)
        self.files = []
        for tid in self.requested:
            f = split_id(tid)[0]
            if f not in self.files:
                self.files.append(f)
        self.recs = {}  # id -> rec
        self.by_nodeid = {}  # nodeid -> rec (or file rec for whole-file ids)
        self.exc_messages = {}  # (nodeid, when) -> 'ExcType: first line'
        self.emitted_errors = set()  # indices of the collection errors written to this batch
        self.items = []  # what to run, in pytest's order
        self.closed = False


def new_rec(batch, tid, f, name):
    return {"id": batch.as_requested.get(tid, tid), "file": f, "name": name if name is not None else f, "started": False,
            "ended": False}


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
    rec["status"] = status
    ev = {"event": "test_end", "id": rec["id"], "file": rec["file"], "name": rec["name"], "status": status,
          "durationMs": int(round(duration_ms or 0))}
    if message:
        ev["message"] = message
    if details:
        ev["details"] = details
    emit(ev)


def end_running(batch, why):
    """The test that was running when pytest stopped (pytest.exit(), KeyboardInterrupt)."""
    for rec in batch.recs.values():
        if rec["started"] and not rec["ended"]:
            end_rec(rec, "failed", 0, "WarrenTestNotFinished: pytest stopped while this test was running: " + why)


# --------------------------------------------------------------------------- re-running an item (serve)


def snapshot_item(item):
    """What running an item changes on it, as collected (before its first run)."""
    kw = getattr(getattr(item, "keywords", None), "_markers", None)
    extra = getattr(item, "extra_keyword_matches", None)
    props = getattr(item, "user_properties", None)
    globs = getattr(getattr(item, "dtest", None), "globs", None)
    return {
        "own_markers": list(item.own_markers) if isinstance(getattr(item, "own_markers", None), list) else None,
        "keywords": dict(kw) if isinstance(kw, dict) else None,
        "extra": set(extra) if isinstance(extra, set) else None,
        "user_properties": list(props) if isinstance(props, list) else None,
        "globs": dict(globs) if isinstance(globs, dict) else None,
    }


def restore_item(pytest, item, saved):
    """An item about to run again in this process: back as collected, as a cold process has it.

    pytest itself re-initialises its fixture request (runtestprotocol, for pytest-rerunfailures);
    this undoes the rest: markers / keywords / user_properties added at run time
    (request.applymarker, record_property), the report sections (captured output) of the
    earlier run, the test-class instance (pytest makes one per item, and keeps it), the
    doctest globals (doctest clears them after a run)."""
    if saved["own_markers"] is not None and isinstance(getattr(item, "own_markers", None), list):
        item.own_markers[:] = saved["own_markers"]
    kw = getattr(getattr(item, "keywords", None), "_markers", None)
    if saved["keywords"] is not None and isinstance(kw, dict):
        kw.clear()
        kw.update(saved["keywords"])
    extra = getattr(item, "extra_keyword_matches", None)
    if saved["extra"] is not None and isinstance(extra, set):
        extra.clear()
        extra.update(saved["extra"])
    props = getattr(item, "user_properties", None)
    if saved["user_properties"] is not None and isinstance(props, list):
        props[:] = saved["user_properties"]
    if isinstance(getattr(item, "_report_sections", None), list):
        item._report_sections = []
    globs = getattr(getattr(item, "dtest", None), "globs", None)
    if saved["globs"] is not None and isinstance(globs, dict):
        globs.clear()
        globs.update(saved["globs"])
    # a fresh instance of the test class: only when the item's function is the class's own
    # method bound to the instance pytest made (not one a plugin put there)
    cls_node = getattr(pytest, "Class", None)
    if cls_node is not None and isinstance(getattr(item, "parent", None), cls_node):
        obj = item.__dict__.get("_obj")
        inst = getattr(obj, "__self__", None)
        cls = getattr(item.parent, "obj", None)
        name = getattr(item, "originalname", None) or getattr(item, "name", None)
        if (inst is not None and isinstance(cls, type) and type(inst) is cls and name
                and getattr(obj, "__func__", None) is getattr(cls, name, None)):
            item._obj = None
            item.__dict__.pop("_instance", None)


# --------------------------------------------------------------------------- plugin


def make_plugin(pytest, mode, batch=None):
    hookimpl = pytest.hookimpl
    exit_exception = pytest.exit.Exception

    class WarrenPlugin:
        def __init__(self):
            self.collected = False  # pytest_collection_finish was reached
            self.session_started = False
            self.items = []  # discover: the items, in pytest's order; serve: every item collected
            self.collect_errors = []  # [(file, message, details)] in order
            self.collect_skips = []  # [(file, message)] module-level skips
            self.error_files = set()
            self.skipped_files = {}
            self.interrupt = None  # why pytest stopped early (pytest.exit, KeyboardInterrupt)
            self.deselected_by_others = set()
            self._deselecting = False
            self.batch = batch  # run: the run's ids; serve: the batch being run
            self.by_file = None  # serve: file -> [items], in pytest's order
            self.order = None  # serve: id(item) -> its place in pytest's order
            self.files_contiguous = True  # serve: each file's items are together (no plugin mixed them)
            self.pristine = {}  # serve: item -> snapshot_item() before its first run
            self.eof = False  # serve: end of stdin was reached
            self.recorder = None  # serve: a StartRecorder on sys.stderr until the session starts
            self.config = None

        # ---- options that are the runner's business, not the suite's

        @hookimpl(tryfirst=True)
        def pytest_cmdline_main(self, config):
            self.config = config
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
            if mode == "run" and self.batch is not None:
                # the batch's files, not the suite's own paths (they chose what was discovered)
                config.args = [f for f in self.batch.files if os.path.exists(os.path.join(CWD, f))]
            if mode in ("run", "serve"):
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
            use_warren_cache_dir(config)
            return None

        def pytest_sessionstart(self, session):
            self.session_started = True
            if self.recorder is not None:
                self.recorder.recording = False
                self.recorder.parts = []
            if mode in ("run", "serve"):
                emit({"event": "start", "count": self.batch.count})

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
                    emit(collect_error_event(f, msg, details))
                elif mode == "serve" and concerns(f, self.batch.files):
                    # the first batch's (the one that made the session collect): right away
                    self.batch.emitted_errors.add(len(self.collect_errors) - 1)
                    emit(collect_error_event(f, msg, details))
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
                return  # serve: each batch picks its items from all of them
            keep, dropped = self.select(self.batch, items)
            if dropped:
                self._deselecting = True
                try:
                    config.hook.pytest_deselected(items=dropped)
                finally:
                    self._deselecting = False
            items[:] = keep

        def select(self, b, items):
            """The items of batch `b` among `items` (pytest's order) -> (keep, dropped); reports the
            ids that are not there (not found, skipped at collection, nothing collected)."""
            whole = {}  # file -> file rec
            for tid in b.requested:
                f, rest = split_id(tid)
                if rest is None:
                    rec = new_rec(b, tid, f, f + " (whole file)")
                    rec["whole"] = True
                    rec["pending_items"] = 0
                    rec["outcomes"] = []
                    whole[f] = rec
                    b.recs[tid] = rec
            keep = []
            dropped = []
            for it in items:
                tid = item_id(it)
                rec = None
                if tid in b.recs:
                    rec = None  # duplicate node id: the first one only
                elif tid in b.requested_set:
                    f, rest = split_id(tid)
                    rec = new_rec(b, tid, f, rest)
                    b.recs[tid] = rec
                    b.by_nodeid[it.nodeid] = rec
                else:
                    f = split_id(tid)[0]
                    if f in whole and it.nodeid not in b.by_nodeid:
                        rec = whole[f]
                        rec["pending_items"] += 1
                        b.by_nodeid[it.nodeid] = rec
                (keep if rec is not None else dropped).append(it)
            # requested but not collected
            for tid in b.requested:
                if tid in b.recs:
                    continue
                f, rest = split_id(tid)
                rec = new_rec(b, tid, f, rest)
                b.recs[tid] = rec
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
            # whole-file ids: skipped at collection, or nothing to run
            for rec in list(b.recs.values()):
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
            return keep, dropped

        def pytest_collection_finish(self, session):
            self.collected = True
            if mode == "discover":
                self.items = list(session.items)
            elif mode == "run":
                self.batch.items = list(session.items)
            elif mode == "serve":
                self.items = list(session.items)
                self.by_file = {}
                self.order = {id(it): n for n, it in enumerate(self.items)}
                last = None
                for it in self.items:
                    f = split_id(item_id(it))[0]
                    if f != last and f in self.by_file:
                        self.files_contiguous = False
                    last = f
                    self.by_file.setdefault(f, []).append(it)

        # ---- running

        @hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session):
            if mode == "run":
                stop = self.run_items(session, self.batch.items)
                if stop is not None:
                    raise stop  # as pytest's own loop does: Failed / Interrupted
                return True
            if mode == "serve":
                self.serve(session)
                return True
            return None  # discover: pytest's own (--collect-only)

        def run_items(self, session, items):
            """pytest's main loop over `items`; the session's Failed / Interrupted when it asked to stop."""
            for i, item in enumerate(items):
                nextitem = items[i + 1] if i + 1 < len(items) else None
                if mode == "serve":
                    saved = self.pristine.get(item)
                    if saved is None:
                        self.pristine[item] = snapshot_item(item)
                    else:
                        restore_item(pytest, item, saved)
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                if session.shouldfail:
                    return session.Failed(session.shouldfail)
                if session.shouldstop:
                    return session.Interrupted(session.shouldstop)
            return None

        def serve(self, session):
            """The batches, the first one's command already read (it made the session start)."""
            b = self.batch
            while True:
                self.serve_batch(session, b)
                cmd = read_command()
                if cmd is None:
                    self.eof = True
                    return
                b = self.batch = open_batch(cmd)
                os.chdir(CWD)
                emit({"event": "start", "count": b.count})

        def serve_batch(self, session, b):
            for i, (f, msg, details) in enumerate(self.collect_errors):
                if i not in b.emitted_errors and concerns(f, b.files):
                    b.emitted_errors.add(i)
                    emit(collect_error_event(f, msg, details))
            candidates = []
            for f in b.files:
                candidates.extend(self.by_file.get(f, ()))
            if not self.files_contiguous:
                # a plugin of the suite ordered the items across files: that order
                candidates.sort(key=lambda it: self.order[id(it)])
            # else file by file in the batch's order, as pytest runs the files given to it
            b.items, _ = self.select(b, candidates)
            session.shouldfail = False
            session.shouldstop = False
            session.testsfailed = 0
            self.interrupt = None
            why = None
            try:
                stop = self.run_items(session, b.items)
                if stop is not None:
                    sys.stderr.write("!!! %s: %s !!!\n" % (type(stop).__name__, stop))
            except exit_exception as e:
                why = exception_message(e)
                sys.stderr.write("%s: %s\n" % (type(e).__name__, getattr(e, "msg", e)))
            # what an early stop left set up, as pytest's sessionfinish tears it down (after a
            # batch that ran to its end, nothing: its last item had no nextitem)
            try:
                session._setupstate.teardown_exact(None)
            except Exception as e:
                import traceback

                emit({"event": "error", "message": "%s: tearing down after the batch stopped failed: %s" % (PROG, exception_message(e)),
                      "details": traceback.format_exc()})
            session.shouldfail = False
            session.shouldstop = False
            self.close_batch(b, why or "pytest stopped")

        def close_batch(self, b, why):
            if b.closed:
                return
            b.closed = True
            end_running(b, why)
            self.forget_reports(b)
            emit({"event": "done"})
            end_batch(b.number)

        def forget_reports(self, b):
            """The terminal reporter keeps every report of the session (for its final summary):
            in a runner that lives for many batches that is memory that only grows, and a final
            summary of every failure ever (seconds at end of stdin). A line per batch instead."""
            counts = {}
            for rec in b.recs.values():
                st = rec.get("status")
                counts[st] = counts.get(st, 0) + 1
            tr = self.config.pluginmanager.get_plugin("terminalreporter") if self.config is not None else None
            stats = getattr(tr, "stats", None)
            if isinstance(stats, dict):
                stats.clear()
                try:
                    sys.stdout.write("\n[%s] batch %s: %d ids, %s\n" % (
                        PROG, b.number, len(b.requested),
                        ", ".join("%d %s" % (n, st or "without a result (collection error, not reached)")
                                  for st, n in sorted(counts.items(), key=lambda x: str(x[0])))
                        or "nothing run"))
                except Exception:
                    pass

        @hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            outcome = yield
            try:
                rep = outcome.get_result()
            except BaseException:
                return
            if rep.failed and call.excinfo is not None and self.batch is not None:
                try:
                    self.batch.exc_messages[(item.nodeid, rep.when)] = exception_message(call.excinfo.value)
                except Exception:
                    pass

        def pytest_runtest_logstart(self, nodeid, location):
            rec = self.batch.by_nodeid.get(nodeid) if self.batch is not None else None
            if rec is not None:
                start_rec(rec)
                rec["item_reports"] = []

        def pytest_runtest_logreport(self, report):
            rec = self.batch.by_nodeid.get(report.nodeid) if self.batch is not None else None
            if rec is None:
                return
            if report.outcome == "rerun":  # pytest-rerunfailures: this attempt does not count
                rec["item_reports"] = []
                return
            rec.setdefault("item_reports", []).append(report)

        def pytest_runtest_logfinish(self, nodeid, location):
            rec = self.batch.by_nodeid.get(nodeid) if self.batch is not None else None
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
                message = self.batch.exc_messages.get((nodeid, first.when))
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

    return WarrenPlugin()


def use_warren_cache_dir(config):
    """pytest's cache under $WARREN_CACHE_DIR, unless the suite chose its own cache_dir."""
    base = os.environ.get("WARREN_CACHE_DIR")
    if not base:
        return
    try:
        current = config.getini("cache_dir")
    except (ValueError, KeyError):
        return  # the cacheprovider plugin is disabled (-p no:cacheprovider): no cache at all
    if str(current) != ".pytest_cache":
        return  # the suite's config file, or -o cache_dir=... (PYTEST_ADDOPTS)
    for o in getattr(config.option, "override_ini", None) or ():
        if str(o).split("=", 1)[0].strip() == "cache_dir":
            return  # -o cache_dir=... in the config's addopts (which pytest itself ignores)
    inipath = getattr(config, "inipath", None)
    if inipath is not None:
        import re

        try:
            with open(str(inipath), "r", encoding="utf-8", errors="replace") as f:
                if re.search(r"(?m)^\s*cache_dir\s*=", f.read()):
                    return  # set there to pytest's default, explicitly
        except OSError:
            pass
    cache = getattr(config, "_inicache", None)  # getini's memo (pytest 7, 8, 9)
    if isinstance(cache, dict):
        cache["cache_dir"] = os.path.join(os.path.abspath(base), "pytest")


# --------------------------------------------------------------------------- modes


def discover(pytest):
    plugin = make_plugin(pytest, "discover")
    code = pytest.main(["--collect-only"] + SUITE_ARGS, plugins=[plugin])
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
    batch = Batch(None, read_ids())
    # missing files are not given to pytest (it would abort the session): reported not found
    args = [f for f in batch.files if os.path.exists(os.path.join(CWD, f))]
    plugin = make_plugin(pytest, "run", batch)
    if not args:
        emit({"event": "start", "count": batch.count})
        for tid in batch.requested:
            f, rest = split_id(tid)
            end_rec(new_rec(batch, tid, f, rest), "failed", 0,
                    "WarrenTestNotFound: %s does not exist (renamed or removed since discovery)" % f)
        emit({"event": "done"})
        _state["finished"] = True
        return 1
    code = int(pytest.main(["--continue-on-collection-errors"] + SUITE_ARGS + ["--"] + args, plugins=[plugin]))
    if not plugin.session_started:
        fatal("pytest could not start (exit code %d: usage error, bad configuration or a conftest.py "
              "failing to import); see its output above" % code)
    end_running(batch, plugin.interrupt or "pytest stopped (exit code %d)" % code)
    emit({"event": "done"})
    _state["finished"] = True
    return 1 if _state["any_failure"] else 0


def open_batch(cmd):
    """serve: a command's batch; its events go to the command's file from now on."""
    retarget(cmd["events"])
    return Batch(cmd.get("batch"), [i if isinstance(i, str) else str(i) for i in cmd["ids"]
                                    if not (isinstance(i, str) and not i.strip())])


class StartRecorder:
    """serve: sys.stderr while pytest starts, keeping what it says when it cannot start (its
    conftest.py traceback, a usage error): every later batch says it again, as each cold process
    would (the slot keeps each batch's own stderr, for the details of a crash)."""

    LIMIT = 65536

    def __init__(self, stream):
        self._stream = stream
        self.recording = True
        self.size = 0
        self.parts = []

    def write(self, s):
        if self.recording and self.size < self.LIMIT:
            self.parts.append(s)
            self.size += len(s)
        return self._stream.write(s)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def text(self):
        return "".join(self.parts)[:self.LIMIT]


def import_pytest():
    """pytest, or (None, why)."""
    try:
        import pytest
    except ImportError as e:
        return None, ("cannot import pytest with %s (%s): install pytest for this interpreter, or point "
                      "WARREN_PYTHON at one that has it (or create the suite's .venv)" % (sys.executable, e))
    major = int(str(pytest.__version__).split(".")[0] or 0)
    if major < 7:
        return None, "pytest %s is too old for this adapter (needs pytest >= 7)" % pytest.__version__
    return pytest, None


def serve():
    """The warm runner (see the module's doc): -> the exit code."""
    take_stdin()
    cmd = read_command()
    if cmd is None:
        return 0
    batch = open_batch(cmd)
    pytest, failure = import_pytest()
    said = ""  # what pytest printed when it could not start
    if pytest is not None:
        plugin = make_plugin(pytest, "serve", batch)
        recorder = plugin.recorder = StartRecorder(sys.stderr)
        sys.stderr = recorder
        try:
            code = int(pytest.main(["--continue-on-collection-errors"] + SUITE_ARGS, plugins=[plugin]))
        except BaseException as e:  # a bug of ours, or an exception pytest.main let through
            import traceback

            ev = {"event": "error", "message": PROG + ": unexpected failure: " + exception_message(e),
                  "details": traceback.format_exc()}
            sys.stderr.write(ev["message"] + "\n" + ev["details"] + "\n")
            if not plugin.batch.closed:
                emit(ev)
                end_batch(plugin.batch.number)
            return 2
        if plugin.session_started:
            b = plugin.batch
            if not b.closed:
                # the session ended in the middle of a batch (KeyboardInterrupt, an internal
                # error, pytest.exit() at collection): that batch ends as run mode's would
                end_running(b, plugin.interrupt or "pytest stopped (exit code %d)" % code)
                emit({"event": "done"})
                end_batch(b.number)
            return 0 if plugin.eof else 1
        failure = ("pytest could not start (exit code %d: usage error, bad configuration or a conftest.py "
                   "failing to import); see its output above" % code)
        said = recorder.text()
        recorder.recording = False
    # pytest cannot work here: this batch and every later one say so, as run mode would
    ev = {"event": "error", "message": PROG + ": " + failure}
    first = True
    while True:
        if not first and said:
            sys.stderr.write(said)
        first = False
        sys.stderr.write(ev["message"] + "\n")
        emit(ev)
        end_batch(batch.number)
        cmd = read_command()
        if cmd is None:
            return 0
        batch = open_batch(cmd)


def main():
    if MODE == "serve":
        code = serve()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        sys.exit(code)
    open_events()
    if MODE not in ("discover", "run"):
        fatal("usage: python warren_pytest.py discover|run|serve (got %r)" % (MODE,))
    pytest, failure = import_pytest()
    if failure:
        fatal(failure)
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
