"""What runs outside the grader: a zygote process and, forked from it, one process per question.

The supervisor starts ``python -I -c <this file> `` in an empty temporary folder (so that
nothing of the autograder is on ``sys.path``). That *zygote* imports torch once, then for each
question it receives a job (pickled by the supervisor: the notebook's code cells, the function
to call, the inputs, the rules) and forks a child that

1. starts its own session (``setsid``) and closes every inherited file descriptor except the
   pipe its results go through; stdin/stdout/stderr go to ``/dev/null``;
2. may not write any file (``RLIMIT_FSIZE = 0``), burn more CPU than its limit, or dump core;
3. loses the forbidden built-ins of the question: every attribute of every loaded ``torch``
   module, every ``torch.Tensor`` method and every ``torch.ops`` operator whose name a rule
   matches is replaced by a *tripwire* that reports the rule and raises, and holds no
   reference to the original;
4. installs an audit hook (PEP 578, cannot be removed) that refuses new imports (``normtut``
   is never loaded), opening files, listing folders, starting processes or threads of
   execution outside (``fork``, ``exec``, ``subprocess``, ``os.system``), sending signals,
   ``ctypes`` and sockets;
5. executes the notebook's code cells (each under a time alarm; a failing cell is reported and
   skipped), then calls the question's function on each input inside a dispatch mode that
   refuses the forbidden ATen operators, writing each output (tensors as raw bytes in JSON,
   never pickle) to the pipe; finally it runs the question's public checks.

The zygote waits for the child with the question's time limit, then kills the child's whole
session and every process that outlived it (the zygote is a child subreaper, so orphans of
the child become its children), and relays what the child wrote. The supervisor parses that
as untrusted JSON; the expected values never reach this process.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import re
import select
import signal
import struct
import sys
import time

MAX_OUTPUT = 32 * 1024 * 1024
PRELOAD = (
    "math cmath random itertools functools collections collections.abc typing dataclasses "
    "copy operator numbers statistics fractions decimal warnings time string enum abc "
    "numpy torch torch.nn torch.nn.functional torch.nn.init torch.linalg torch.optim "
    "torch.utils._python_dispatch torch.overrides"
).split()
_DTYPES = (
    "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool complex64 complex128"
).split()


# --- encoding values (the child encodes, the supervisor decodes) ---------------------------


def encode(value, depth=0):
    """A JSON-able form of a result: tensors as dtype, shape and raw bytes."""
    import torch

    if depth > 32:
        raise ValueError("result nested too deeply")
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in _DTYPES:
            return {"other": f"tensor of dtype {t.dtype}"}
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"t": name, "s": list(t.shape), "b": base64.b64encode(raw).decode()}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return {"v": value}
    if isinstance(value, int):
        return {"v": int(value)}
    if isinstance(value, float):
        return {"v": float(value)}
    if isinstance(value, torch.Size):
        return {"tuple": [{"v": int(s)} for s in value]}
    if isinstance(value, tuple):
        return {"tuple": [encode(v, depth + 1) for v in value]}
    if isinstance(value, list):
        return {"list": [encode(v, depth + 1) for v in value]}
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return encode(value.item(), depth + 1)
    return {"other": f"{type(value).__name__} object"}


class Opaque:
    """A value the child could not send (a module, a generator, ...): compares unequal."""

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return f"<{self.what}>"


def decode(data, depth=0):
    """Inverse of :func:`encode` for untrusted input: strict, no code runs."""
    import torch

    if depth > 32 or not isinstance(data, dict) or len(data) not in (1, 3):
        raise ValueError("malformed result")
    if "t" in data:
        name, shape, raw = data["t"], data["s"], base64.b64decode(data["b"], validate=True)
        if name not in _DTYPES or not isinstance(shape, list):
            raise ValueError("malformed tensor")
        if not all(isinstance(s, int) and 0 <= s for s in shape):
            raise ValueError("malformed tensor shape")
        dtype = getattr(torch, name)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != math.prod(shape) * itemsize:
            raise ValueError("tensor bytes do not match its shape")
        if not raw:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
    if "v" in data:
        v = data["v"]
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise ValueError("malformed scalar")
        return v
    if "tuple" in data:
        return tuple(decode(v, depth + 1) for v in data["tuple"])
    if "list" in data:
        return [decode(v, depth + 1) for v in data["list"]]
    if "other" in data:
        return Opaque(str(data["other"])[:200])
    raise ValueError("malformed result")


# --- how a question's function is called (the same in the child and for the reference) -----


def run_case(func, driver, args, kwargs, seed):
    """Call ``func`` on one input the way the question ``driver`` says."""
    import torch

    if driver == "call":
        return func(*args, **kwargs)
    if driver == "init":  # in-place initializers: same seed, return the tensor
        torch.manual_seed(seed)
        result = func(*args, **kwargs)
        return args[0] if result is None else result
    if driver == "optimizer":  # one step at a time, the returned state fed back
        param, grads, hyper, state = args
        p, state, out = param.clone(), list(state), []
        for t, g in enumerate(grads, start=1):
            result = func(p, g.clone(), *state, t, **hyper)
            out.append(result)
            if not isinstance(result, tuple) or len(result) != 1 + len(state):
                break
            p, *state = result
        return out
    raise ValueError(f"unknown driver {driver!r}")


# --- the zygote ---------------------------------------------------------------------------


def _read_frame(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    (n,) = struct.unpack(">I", header)
    return _read_exact(fd, n)


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _write_frame(fd, payload):
    data = struct.pack(">I", len(payload)) + payload
    while data:
        data = data[os.write(fd, data) :]


def _children(pid):
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def _kill_all_children():
    """Kill and reap every child of this process (the child and any orphan it left)."""
    for _ in range(100):
        pids = _children(os.getpid())
        if not pids:
            break
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    while True:  # reap anything left
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


def _become_subreaper():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except Exception:
        return False


def _warm_up():
    """Run what the child runs once, so that torch's lazy imports happen before the audit hook."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Warm(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            func.name()
            return func(*args, **(kwargs or {}))

    x = torch.randn(4, 3, dtype=torch.float64)
    with Warm(), torch.no_grad():
        y = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
        torch.linalg.solve(torch.eye(3, dtype=x.dtype) + y[:3], torch.eye(3, dtype=x.dtype))
        torch.linalg.matrix_exp(y[:3] - y[:3].mT)
        torch.nn.functional.normalize(y[0], dim=0)
        torch.empty(3, 3).uniform_(-1, 1).normal_(0, 1)
    encode((y, [1, 2.0, None]))


def zygote_main():
    """Serve jobs from stdin until it closes; one forked child per job."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import torch

    torch.set_num_threads(1)
    _warm_up()
    subreaper = _become_subreaper()
    control_in, control_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    _write_frame(control_out, json.dumps({"ready": True, "subreaper": subreaper}).encode())
    while True:
        frame = _read_frame(control_in)
        if frame is None:
            return
        job = pickle.loads(frame)  # from the supervisor, who started this process
        header, payload = _run_job(job, (control_in, control_out, devnull))
        _write_frame(control_out, json.dumps(header).encode())
        _write_frame(control_out, payload)


def _run_job(job, private_fds):
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            for fd in private_fds:
                os.close(fd)
            _child(job, w)
        finally:
            os._exit(0)
    os.close(w)
    deadline = start + job["time_limit"]
    buf, status, exited = bytearray(), "finished", False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select([r], [], [], min(remaining, 0.05))
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_OUTPUT:
                status = "too_large"
                break
            continue
        if not exited:
            done, _ = os.waitpid(pid, os.WNOHANG)
            exited = done == pid
            if exited:
                os.set_blocking(r, False)
                try:
                    while chunk := os.read(r, 1 << 16):
                        buf += chunk
                except BlockingIOError:
                    pass
                break
    _kill_all_children()
    os.close(r)
    header = {"status": status, "seconds": round(time.monotonic() - start, 3)}
    return header, bytes(buf[:MAX_OUTPUT])


# --- the child ----------------------------------------------------------------------------


class RuleViolation(BaseException):
    """Raised by a tripwire; a BaseException so that ``except Exception`` does not hide it."""


class CellTimeout(BaseException):
    """A notebook cell ran past its alarm."""


def _child(job, w):
    os.setsid()
    os.closerange(3, w)
    os.closerange(w + 1, 4096)
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(job["time_limit"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead

    def send(message):
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(w, data) :]

    import types

    import torch

    otter_stub = types.ModuleType("otter")

    class _Notebook:
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    otter_stub.Notebook = _Notebook
    sys.modules["otter"] = otter_stub
    rules = job["rules"]
    _poison(rules, send)
    mode = _dispatch_guard(rules, send)
    _arm_audit_hook()

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    signal.signal(signal.SIGALRM, _alarm)
    for k, source in enumerate(job["cells"]):
        try:
            code = compile(_strip_magics(source), f"<cell {k + 1}>", "exec")
        except SyntaxError as exc:
            send({"kind": "cell_error", "cell": k + 1, "error": f"SyntaxError: {exc}"})
            continue
        signal.setitimer(signal.ITIMER_REAL, job["cell_time_limit"])
        try:
            exec(code, namespace)
        except BaseException as exc:  # noqa: BLE001 - the notebook may raise anything
            send({"kind": "cell_error", "cell": k + 1, "error": _describe_exception(exc)})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    from torch.utils._python_dispatch import _get_current_dispatch_mode as current_mode

    func = namespace.get(job["function"])
    if not callable(func):
        send({"kind": "missing", "function": job["function"]})
    else:
        for k, (args, kwargs, seed) in enumerate(job["cases"]):
            send({"kind": "call", "case": k})  # violations count from here ...
            try:
                with mode, torch.no_grad() if rules.get("autograd") else _nothing():
                    result = run_case(func, job["driver"], args, kwargs, seed)
                    if current_mode() is not mode:
                        raise RuleViolation("the grader's dispatch guard was removed")
                    message = {"kind": "result", "case": k, "value": encode(result)}
            except RuleViolation as exc:
                message = {"kind": "violation", "rule": str(exc)}
            except BaseException as exc:  # noqa: BLE001
                message = {"kind": "error", "case": k, "error": _describe_exception(exc)}
            send(message)
            send({"kind": "called", "case": k})  # ... to here
    for k, source in enumerate(job["public_checks"]):
        try:
            exec(compile(source, f"<public check {k + 1}>", "exec"), dict(namespace))
            send({"kind": "public", "index": k, "passed": True, "message": ""})
        except BaseException as exc:  # noqa: BLE001
            send(
                {"kind": "public", "index": k, "passed": False, "message": _describe_exception(exc)}
            )
    send({"kind": "done"})


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _alarm(signum, frame):
    raise CellTimeout("this cell ran past its time limit and was stopped")


def _strip_magics(source):
    return "\n".join(
        "pass  # (IPython magic removed)" if line.lstrip().startswith(("%", "!")) else line
        for line in source.splitlines()
    )


def _describe_exception(exc):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:500] + "..."


def _tripwire(rule_name, what, send):
    message = f"{what} is not allowed in this question ({rule_name})"

    def forbidden(*args, **kwargs):
        try:
            send({"kind": "violation", "rule": message})
        finally:
            raise RuleViolation(message)

    forbidden.__name__ = what.rsplit(".", 1)[-1]
    return forbidden


def _poison(rules, send):
    """Replace every attribute, Tensor method and operator a rule names by a tripwire."""
    import torch

    for rule in rules["rules"]:
        attrs = re.compile(rule["attrs"]) if rule.get("attrs") else None
        prefixes = tuple(rule.get("modules", ()))
        for module_name, module in list(sys.modules.items()):
            if module is None or not module_name.startswith("torch"):
                continue
            whole = bool(prefixes) and (module_name + ".").startswith(
                tuple(p + "." for p in prefixes)
            )
            for name in list(vars(module)):
                value = vars(module)[name]
                if isinstance(value, type(sys)):  # a submodule: poisoned on its own
                    if not (attrs and attrs.match(name)):
                        continue
                elif not ((attrs and attrs.match(name)) or (whole and callable(value))):
                    continue
                try:
                    setattr(module, name, _tripwire(rule["name"], f"{module_name}.{name}", send))
                except (AttributeError, TypeError):
                    pass
        if attrs:
            for name in dir(torch.Tensor):
                if attrs.match(name):
                    try:
                        setattr(torch.Tensor, name, _tripwire(rule["name"], f"Tensor.{name}", send))
                    except (AttributeError, TypeError):
                        pass
            for cls_name in ("_VariableFunctions", "_nn", "_linalg", "_special"):
                cls = getattr(torch._C, cls_name, None)
                for name in dir(cls) if cls is not None else ():
                    if attrs.match(name):
                        try:
                            setattr(cls, name, _tripwire(rule["name"], f"torch._C.{name}", send))
                        except (AttributeError, TypeError):
                            pass
        ops = re.compile(rule["ops"]) if rule.get("ops") else None
        if ops:
            for full in torch._C._dispatch_get_all_op_names():
                namespace, _, op = full.partition("::")
                op = op.split(".")[0]
                if ops.search(op) and namespace in ("aten", "quantized", "prims"):
                    try:
                        setattr(
                            getattr(torch.ops, namespace),
                            op,
                            _tripwire(rule["name"], f"torch.ops.{namespace}.{op}", send),
                        )
                    except (AttributeError, TypeError, RuntimeError):
                        pass
    if rules.get("autograd"):
        # the graded call runs under no_grad; these run a backward pass however it is reached
        for owner, name in (
            (torch.autograd.variable.Variable, "_execution_engine"),
            (torch.autograd.graph, "_engine_run_backward"),
            (torch.autograd, "backward"),
            (torch.autograd, "grad"),
        ):
            try:
                setattr(owner, name, _tripwire("autograd", f"{owner.__name__}.{name}", send))
            except (AttributeError, TypeError):
                pass


def _dispatch_guard(rules, send):
    """A dispatch mode that refuses the forbidden ATen operators, however they were reached."""
    from torch.utils._python_dispatch import TorchDispatchMode

    checks = [(re.compile(r["ops"]), r["name"]) for r in rules["rules"] if r.get("ops")]
    autograd = bool(rules.get("autograd"))

    class Guard(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.name().split("::")[-1].split(".")[0]
            for pattern, rule in checks:
                if pattern.search(name):
                    message = f"torch.ops.aten.{name} is not allowed in this question ({rule})"
                    try:
                        send({"kind": "violation", "rule": message})
                    finally:
                        raise RuleViolation(message)
            result = func(*args, **(kwargs or {}))
            if autograd and _requires_grad(result):
                message = "autograd is not allowed in this question (derive the backward by hand)"
                try:
                    send({"kind": "violation", "rule": message})
                finally:
                    raise RuleViolation(message)
            return result

    return Guard()


def _requires_grad(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (tuple, list)):
        return any(_requires_grad(v) for v in value)
    return False


_HOOK_SOURCE = """
def hook(event, args, _exact=EXACT, _prefixes=PREFIXES, _err=PermissionError):
    if event in _exact or event.startswith(_prefixes):
        raise _err("not available while grading: %s %.200r" % (event, args[:1]))
"""


def _arm_audit_hook():
    """Refuse files, imports, processes, signals, ctypes and sockets from now on."""
    exact = frozenset(
        "open import os.listdir os.scandir os.system os.exec os.posix_spawn os.spawn os.fork "
        "os.forkpty os.kill os.killpg os.remove os.rename os.rmdir os.mkdir os.chmod os.chown "
        "os.truncate os.link os.symlink os.utime os.chdir os.putenv os.unsetenv "
        "subprocess.Popen shutil.copyfile shutil.rmtree mmap.__new__ gc.get_objects "
        "gc.get_referrers gc.get_referents signal.pthread_kill sys.settrace sys.setprofile "
        "sys._current_frames sys.addaudithook code.__new__ function.__new__ "
        "fcntl.ioctl pty.spawn resource.setrlimit".split()
    )
    prefixes = ("ctypes.", "socket.", "_posixsubprocess", "os.exec", "os.spawn", "winreg")
    scope = {"EXACT": exact, "PREFIXES": prefixes, "PermissionError": PermissionError}
    exec(_HOOK_SOURCE, scope)
    sys.addaudithook(scope["hook"])
