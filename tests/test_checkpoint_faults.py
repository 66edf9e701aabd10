"""``fastinit checkpoint`` killed, interrupted or terminated: what stays on disk, what it says.

Real processes: ``python -m fastinit checkpoint`` writes a ~0.45 GB file (a
second or two of filling), and the test waits for its progress bar to pass
1% before it sends the signal, so the signal lands while the file is being
written. SIGKILL cannot be caught: with an unnamed ``O_TMPFILE`` file the
kernel frees the blocks, nothing is left; where there is no ``O_TMPFILE``
(forced here with ``FASTINIT_CHECKPOINT_NO_TMPFILE=1``) a process-tagged
``.part`` file stays until the next run into that directory removes it.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import fastinit as fi
from fastinit import cli
from fastinit.cli import checkpoint as ck
from fastinit.cli.checkpoint import tmpfile as ck_tmpfile
from fastinit.cli.checkpoint import writer as ck_writer

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TMPFILE = "FASTINIT_CHECKPOINT_NO_TMPFILE"

# 112 M float32 elements, 0.45 GB: a second or two of filling on two cores
BIG_SPEC = {"dtype": "float32", "tensors": [
    {"name": "a.weight", "shape": [14336, 4096], "init": "normal", "args": {"std": 0.02}},
    {"name": "b.weight", "shape": [8192, 4096], "init": "kaiming_uniform",
     "args": {"a": 2.23606797749979}},
    {"name": "c.weight", "shape": [5120, 4096], "init": "truncated_normal"}]}
SMALL_SPEC = {"tensors": [{"name": "w", "shape": [64, 32], "init": "normal"},
                          {"name": "b", "shape": [64], "init": "zeros"}]}
OUT = "big.safetensors"


def _tmpfile_supported(d):
    """Whether the file system of ``d`` takes O_TMPFILE (probed directly, not by fastinit)."""
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:
        return False
    os.close(fd)
    return True


def _part_re(out_name):
    return re.compile(r"^\." + re.escape(out_name)
                      + r"\.fastinit-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}\.part$")


def _small_spec(d):
    """SMALL_SPEC as a file in ``d``: for runs whose size does not matter (the reruns)."""
    spec = d / "small.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    return spec


@pytest.fixture
def big(tmp_path):
    """(spec path, output directory); the directory is emptied afterwards (GBs)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BIG_SPEC))
    d = tmp_path / "out"
    d.mkdir()
    yield spec, d
    for name in os.listdir(d):
        p = d / name
        if p.is_file():
            p.unlink()


class _Writer:
    """``python -m fastinit checkpoint ARGS --progress`` with stdout and stderr read
    by threads, so the test can wait for the progress bar to move."""

    def __init__(self, *args, env=None):
        # SIGINT's default disposition in the child: a shell starts background jobs
        # with SIGINT ignored, and Python then never raises KeyboardInterrupt
        self.proc = subprocess.Popen(
            [PY, "-m", "fastinit", "checkpoint", *map(str, args), "--progress",
             "--chunk-mib", "8"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.out, self.err = [], []
        self.threads = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                        for s, buf in ((self.proc.stdout, self.out),
                                       (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream, buf):
        while True:
            data = stream.read1(65536)
            if not data:
                return
            buf.append(data)

    @property
    def stdout(self):
        return b"".join(self.out).decode("utf-8", "replace")

    @property
    def stderr(self):
        return b"".join(self.err).decode("utf-8", "replace")

    def wait_for(self, desc="fastinit checkpoint", timeout=240):
        """Block until the ``desc`` progress bar shows at least 1% (and under 100%)."""
        pat = re.compile(re.escape(desc) + r":\s+([0-9.]+)%")
        deadline = time.monotonic() + timeout
        while True:
            seen = [float(p) for p in pat.findall(self.stderr)]
            if seen and seen[-1] >= 1:
                assert seen[-1] < 100, f"finished before the signal: {self.stderr[-300:]}"
                return
            assert self.proc.poll() is None, (self.proc.returncode, self.stdout,
                                              self.stderr)
            assert time.monotonic() < deadline, f"no progress: {self.stderr[-300:]}"
            time.sleep(0.01)

    def interrupt(self, sig, desc="fastinit checkpoint", listing=None):
        """Send ``sig`` once the ``desc`` bar moves, wait for the exit; (exit status,
        the names in directory ``listing`` just before the signal)."""
        try:
            self.wait_for(desc)
            during = sorted(os.listdir(listing)) if listing is not None else None
            self.proc.send_signal(sig)
        finally:
            status = self.finish()
        return status, during

    def finish(self, timeout=240):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self.threads:
                t.join(10)
        return self.proc.returncode


def _run(*args, env=None):
    return subprocess.run([PY, "-m", "fastinit", "checkpoint", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def _fallback_env():
    return {**os.environ, NO_TMPFILE: "1"}


# --- SIGKILL -------------------------------------------------------------------------
def test_kill9_leaves_nothing_and_a_rerun_completes(big):
    """O_TMPFILE: while writing there is no name in the directory; after kill -9 there is
    nothing but the old OUT, untouched; a rerun (of a small spec: its size does not
    matter) writes and verifies the file."""
    spec, d = big
    if not _tmpfile_supported(d):
        pytest.skip("the file system of the temporary directory has no O_TMPFILE")
    out = d / OUT
    out.write_bytes(b"the previous checkpoint")
    w = _Writer(spec, "-o", out)
    status, during = w.interrupt(signal.SIGKILL, listing=d)
    assert status == -signal.SIGKILL, w.stderr
    assert during == [OUT]                       # the file being written has no name
    assert sorted(os.listdir(d)) == [OUT]
    assert out.read_bytes() == b"the previous checkpoint"
    small = _small_spec(spec.parent)
    proc = _run(small, "-o", out, "--verify")
    assert proc.returncode == 0, proc.stderr
    assert f"verified {out}" in proc.stdout
    assert sorted(os.listdir(d)) == [OUT]
    assert out.stat().st_size == ck.layout(ck.load_spec(str(small)), fi.DEFAULT_SEED).total


def test_kill9_without_tmpfile_leaves_a_tagged_part_that_the_next_run_removes(big):
    """No O_TMPFILE (forced): kill -9 leaves ``.OUT.fastinit-<host>-<pid>-<random>.part``;
    the next run into the directory removes it, because that pid is gone, and keeps
    the same kind of file of a live process, one of another machine and every file
    that does not follow the pattern exactly. The reruns write a small spec: what they
    remove does not depend on what they write."""
    spec, d = big
    out = d / OUT
    w = _Writer(spec, "-o", out, env=_fallback_env())
    status, during = w.interrupt(signal.SIGKILL, listing=d)
    assert status == -signal.SIGKILL, w.stderr
    assert len(during) == 1, during
    m = _part_re(OUT).match(during[0])
    assert m and int(m.group(2)) == w.proc.pid, during
    stale = d / during[0]
    size = ck.layout(ck.load_spec(str(spec)), fi.DEFAULT_SEED).total
    assert stale.stat().st_size == size              # the full preallocated size
    tag = m.group(1)
    other_tag = "%08x" % (int(tag, 16) ^ 1)
    keep = [
        f".{OUT}.fastinit-{tag}-{os.getpid()}-abcd1234.part",     # live: this test
        f".other.safetensors.fastinit-{tag}-{os.getppid()}-0123abcd.part",   # live
        f".{OUT}.fastinit-{other_tag}-{w.proc.pid}-abcd1234.part",  # another machine
        f".{OUT}.k2j4l3m5.part",                   # an older fastinit's name, no pid
        f"{OUT}.fastinit-{tag}-{w.proc.pid}-abcd1234.part",        # no leading dot
        f".{OUT}.fastinit-{tag}-{w.proc.pid}-abcd1234.part.bak",
        "notes.part",
    ]
    for name in keep:
        (d / name).write_bytes(b"not ours to remove")
    small = _small_spec(spec.parent)
    for env in (_fallback_env(), None):
        proc = _run(small, "-o", out, "--chunk-mib", "64", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "removed a stale temporary file" in proc.stderr or env is None, proc.stderr
        assert during[0] in proc.stderr or env is None
        assert not stale.exists()
        assert sorted(os.listdir(d)) == sorted(keep + [OUT])
        assert out.stat().st_size == ck.layout(ck.load_spec(str(small)),
                                               fi.DEFAULT_SEED).total


def _dead_pid():
    p = subprocess.Popen([PY, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_files_removed_by_the_rules(tmp_path):
    """In process: which tagged files a write removes (dead pid, or a live pid that
    started after the file was last written: a reused pid) and which it keeps."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    d = tmp_path / "out"
    d.mkdir()
    tag = ck_tmpfile.host_tag()
    dead = _dead_pid()
    child = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])
    try:
        live = child.pid
        names = {
            "dead": f".x.safetensors.fastinit-{tag}-{dead}-aaaa1111.part",
            "reused": f".x.safetensors.fastinit-{tag}-{live}-bbbb2222.part",
            "live": f".x.safetensors.fastinit-{tag}-{live}-cccc3333.part",
            "self": f".x.safetensors.fastinit-{tag}-{os.getpid()}-cccc4444.part",
            "self_reused": f".x.safetensors.fastinit-{tag}-{os.getpid()}-cccc5555.part",
            "other_host": f".x.safetensors.fastinit-{'%08x' % (int(tag, 16) ^ 2)}-{dead}"
                          f"-dddd4444.part",
            "pid_0": f".x.safetensors.fastinit-{tag}-0-eeee5555.part",
            "a_dir": f".y.safetensors.fastinit-{tag}-{dead}-ffff6666.part",
            "a_symlink": f".z.safetensors.fastinit-{tag}-{dead}-ffff7777.part",
        }
        (tmp_path / "target").write_bytes(b"x")
        for key, name in names.items():
            if key == "a_dir":
                (d / name).mkdir()
            elif key == "a_symlink":
                (d / name).symlink_to(tmp_path / "target")
            else:
                (d / name).write_bytes(b"x" * 10)
        # "reused": last written long before its pid's process (the child) started
        # "self_reused": the same, for this very process's pid
        old = time.time() - 10 * 24 * 3600
        for key in ("reused", "self_reused"):
            os.utime(d / names[key], (old, old))
        gone = ["dead", "reused", "self_reused"] if sys.platform == "linux" else ["dead"]
        rep = ck.write_checkpoint(str(spec), d / "m.safetensors", 0)
        left = set(os.listdir(d))
        assert sorted(rep.removed) == sorted((str(d / names[k]), 10) for k in gone)
        for key, name in names.items():
            assert (name in left) == (key not in gone), key
        assert "m.safetensors" in left
        rep = ck.write_checkpoint(str(spec), d / "m.safetensors", 0)
        assert rep.removed == []
    finally:
        child.kill()
        child.wait()


# --- O_TMPFILE missing --------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL],
                         ids=["EOPNOTSUPP", "EISDIR", "EINVAL"])
def test_fallback_when_the_file_system_has_no_tmpfile(code, tmp_path, monkeypatch):
    """os.open(dir, O_TMPFILE) failing as a file system without it fails: a named,
    tagged temporary file is used instead, and the result is the same file."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    d = tmp_path / "out"
    d.mkdir()
    real_open = os.open
    names = []

    def fake_open(path, flags, *a, **kw):
        if hasattr(os, "O_TMPFILE") and flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(code, os.strerror(code), path)
        names.append(os.path.basename(os.fspath(path)))
        return real_open(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", fake_open)
    ref = tmp_path / "ref.safetensors"
    ck.write_checkpoint(str(spec), d / "m.safetensors", 5)
    monkeypatch.setattr(os, "open", real_open)
    assert any(_part_re("m.safetensors").match(n) for n in names), names
    assert os.listdir(d) == ["m.safetensors"]
    ck.write_checkpoint(str(spec), ref, 5)
    assert (d / "m.safetensors").read_bytes() == ref.read_bytes()
    assert ck.verify_checkpoint(d / "m.safetensors", str(spec), 5) == []


def test_other_tmpfile_errors_are_errors(tmp_path, monkeypatch):
    """An O_TMPFILE failure that is not "unsupported" (here EACCES) is reported, not
    hidden by a fallback."""
    if not hasattr(os, "O_TMPFILE") or os.environ.get(NO_TMPFILE):
        pytest.skip("no O_TMPFILE")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", fake_open)
    d = tmp_path / "out"
    d.mkdir()
    with pytest.raises(PermissionError, match="cannot create a file in"):
        ck.write_checkpoint(str(spec), d / "m.safetensors", 5)
    assert os.listdir(d) == []


def test_no_name_in_the_directory_while_writing(tmp_path, monkeypatch):
    """In process, O_TMPFILE: in the middle of the fills the directory holds no new
    name; replacing an existing OUT leaves nothing but OUT."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    d = tmp_path / "out"
    d.mkdir()
    if not _tmpfile_supported(d):
        pytest.skip("the file system of the temporary directory has no O_TMPFILE")
    monkeypatch.delenv(NO_TMPFILE, raising=False)
    seen = []
    real = ck_writer.fill_range

    def spy(*a, **kw):
        seen.append(sorted(os.listdir(d)))
        return real(*a, **kw)
    monkeypatch.setattr(ck_writer, "fill_range", spy)
    out = d / "m.safetensors"
    ck.write_checkpoint(str(spec), out, 1)
    assert seen and all(s == [] for s in seen), seen
    first = out.read_bytes()
    seen.clear()
    ck.write_checkpoint(str(spec), out, 2)            # over an existing file
    assert seen and all(s == ["m.safetensors"] for s in seen), seen
    assert os.listdir(d) == ["m.safetensors"] and out.read_bytes() != first
    assert ck.verify_checkpoint(out, str(spec), 2) == []


# --- SIGINT, SIGTERM ---------------------------------------------------------------
@pytest.mark.parametrize("tmpfile", [True, False], ids=["tmpfile", "named"])
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_while_writing(sig, status, tmpfile, big):
    """Ctrl-C or SIGTERM while writing: the documented error line, exit 130 or 143,
    no file left (an existing OUT untouched)."""
    spec, d = big
    if tmpfile and not _tmpfile_supported(d):
        pytest.skip("the file system of the temporary directory has no O_TMPFILE")
    out = d / OUT
    out.write_bytes(b"old")
    w = _Writer(spec, "-o", out, env=None if tmpfile else _fallback_env())
    code, _ = w.interrupt(sig)
    name = signal.Signals(sig).name
    assert code == status, w.stderr
    assert (f"fastinit checkpoint: error: interrupted ({name}); no output written"
            in w.stderr), w.stderr[-500:]
    assert "Traceback" not in w.stderr
    assert "wrote" not in w.stdout
    assert sorted(os.listdir(d)) == [OUT] and out.read_bytes() == b"old"


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_while_verifying(sig, status, big):
    """After the file is written, during --verify: the message says the file is there
    but was not verified."""
    spec, d = big
    out = d / OUT
    w = _Writer(spec, "-o", out, "--verify")
    code, _ = w.interrupt(sig, "fastinit verify")
    name = signal.Signals(sig).name
    assert code == status, w.stderr
    assert (f"fastinit checkpoint: error: interrupted ({name}) while verifying; "
            f"{out} was written but not verified" in w.stderr), w.stderr[-500:]
    assert f"wrote {out}" in w.stdout and "verified" not in w.stdout
    assert sorted(os.listdir(d)) == [OUT]
    assert ck.verify_checkpoint(out, str(spec), fi.DEFAULT_SEED) == []
    w = _Writer(spec, "-o", out, "--verify-only")
    code, _ = w.interrupt(sig, "fastinit verify")
    assert code == status, w.stderr
    assert (f"fastinit checkpoint: error: interrupted ({name}) while verifying {out}\n"
            in w.stderr), w.stderr[-500:]
    assert sorted(os.listdir(d)) == [OUT]


@pytest.mark.parametrize("where", ["after_link", "after_fsync"])
def test_interrupt_just_after_the_file_got_its_name(where, tmp_path, monkeypatch, capsys):
    """Ctrl-C between the link (or rename) and the end of write_checkpoint: the
    exception says the file is in place, and the command does not claim that no
    output was written."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL_SPEC))
    out = tmp_path / "m.safetensors"
    if where == "after_link":                  # before write_checkpoint knows it worked
        real_link, real_replace = ck_tmpfile.link_into_place, os.replace

        def link_then_interrupt(*a, **kw):
            real_link(*a, **kw)
            raise KeyboardInterrupt

        def replace_then_interrupt(*a, **kw):
            real_replace(*a, **kw)
            raise KeyboardInterrupt
        monkeypatch.setattr(ck_tmpfile, "link_into_place", link_then_interrupt)
        monkeypatch.setattr(os, "replace", replace_then_interrupt)
    else:
        def interrupt(d):
            raise KeyboardInterrupt
        monkeypatch.setattr(ck_tmpfile, "fsync_dir", interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        ck.write_checkpoint(str(spec), out, 3)
    assert info.value.checkpoint_written == str(out)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "spec.json"]
    monkeypatch.undo()
    assert ck.verify_checkpoint(out, str(spec), 3) == []
    out.unlink()
    if where == "after_link":
        monkeypatch.setattr(ck_tmpfile, "link_into_place", link_then_interrupt)
        monkeypatch.setattr(os, "replace", replace_then_interrupt)
    else:
        monkeypatch.setattr(ck_tmpfile, "fsync_dir", interrupt)
    assert cli.main(["checkpoint", str(spec), "-o", str(out), "--seed", "3"]) == 130
    err = capsys.readouterr().err
    assert (f"fastinit checkpoint: error: interrupted (SIGINT) just after {out} was "
            f"written" in err), err
    assert "no output written" not in err
