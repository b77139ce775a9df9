"""Start and stop a real, private Salt master + minion(s) for demos and tests.

Everything lives in one temporary root directory, on free loopback ports, as the
current user, so it needs no root and never collides with a system Salt:

    conf/master, conf/minion    master config and the first minion's config
    minion-<id>/conf/minion     every further minion: its own root_dir, so the
                                pki/cache/sock dirs of several minions never collide
    logs/                       <name>.out (stdout+stderr) and Salt's *.log files
    etc/salt/pki/{master,minion}, var/cache/salt/{master,minion} (tokens in
    var/cache/salt/master/tokens), var/run/salt/{master,minion} (the sock_dirs)

Master and minions run as non-daemonized children, each leading its own process
group, so stop() kills them together with every worker they forked. Salt itself is
imported lazily (master_opts/fire_event), never at module import.
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

NETAPI_CLIENTS = ["local", "local_async", "runner", "runner_async", "wheel", "wheel_async"]

FAST_MINION_OPTS = {
    # The minion retries authentication every acceptance_wait_time seconds (default
    # 10): this is what makes the first test.ping after key acceptance ~12 s slower.
    "acceptance_wait_time": 1,
    # ZeroMQ reconnect interval in ms (default 1000..10000, randomized): faster
    # reconnection after stop_master()/start_master().
    "recon_default": 100,
    "recon_max": 1000,
    "recon_randomize": False,
}


def _free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _script(name: str) -> str:
    """Path of a Salt console script: next to sys.executable, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"cannot find the {name!r} script (is salt installed?)")
    return found


def _ipc_accepts(path: Path) -> bool:
    """True when a Unix stream socket at ``path`` accepts a connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _import_salt():
    """Import the salt modules used here, undoing salt's global sys.excepthook."""
    hook = sys.excepthook
    try:
        import salt.config
        import salt.utils.event

        return salt
    finally:
        sys.excepthook = hook


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process of process group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # zombies reparented to a non-reaping PID 1 still answer killpg(pgid, 0)
        import psutil  # a dependency of salt
    except ImportError:
        return True
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except OSError:
            continue
    return False


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (skipped when ``grace`` is 0), SIGKILL it
    after ``grace`` seconds, and wait until no live process of the group remains."""
    steps = [(signal.SIGTERM, grace)] if grace > 0 else []
    for sig, wait in steps + [(signal.SIGKILL, 5.0)]:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)
    proc.wait(timeout=5)


@dataclass
class PrivateSalt:
    """A private Salt master + minion(s) running as child processes of this one."""

    root: Path | None = None  # created (and removed by stop()) when None
    minion_ids: tuple[str, ...] = ("minion1",)
    api_port: int = 0  # 0: pick a free loopback port (resolved by start())
    username: str = "saltdev"  # listed under external_auth: auto, with full access
    eauth_users: dict = field(default_factory=dict)  # more external_auth: auto users → their permissions
    extra_master_opts: dict = field(default_factory=dict)
    api_opts: dict = field(default_factory=dict)  # more keys of the API block
    api_block: str = "rest_tornado"  # or "rest_cherrypy": the block the master config holds

    # set by start() (an empty path until then)
    config_dir: Path = field(init=False, default=Path())
    master_config_path: Path = field(init=False, default=Path())
    sock_dir: Path = field(init=False, default=Path())
    publish_port: int = field(init=False, default=0)
    ret_port: int = field(init=False, default=0)
    _pki_dir: Path = field(init=False, default=Path(), repr=False)
    _created_root: bool = field(init=False, default=False, repr=False)
    _procs: dict = field(init=False, default_factory=dict, repr=False)
    _minion_conf: dict = field(init=False, default_factory=dict, repr=False)

    def start(self, progress: Callable[[str], None] = lambda s: None, timeout: float = 180) -> None:
        """Write the configs, start master and minion(s), accept their keys and return
        once every minion answers test.ping. On any failure, stop everything and raise
        RuntimeError with the tail of the logs."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        atexit.register(self.stop)  # never leave salt processes behind us
        try:
            self._write_configs()
            progress(f"starting salt-master (config in {self.config_dir})…")
            self._spawn("master", "salt-master", self.config_dir)
            for mid in self.minion_ids:
                progress(f"starting salt-minion {mid}…")
                self._spawn(f"minion-{mid}", "salt-minion", self._minion_conf[mid])
            self._wait_event_bus(deadline)
            progress("waiting for minion key…")
            pending, accepted = self._pki_dir / "minions_pre", self._pki_dir / "minions"
            known = lambda m: (pending / m).exists() or (accepted / m).exists()  # noqa: E731
            self._poll(lambda: all(map(known, self.minion_ids)), deadline,
                       "the minion key(s) to show up in salt-key -L")
            if any((pending / m).exists() for m in self.minion_ids):
                res = self._run("salt-key", "-A", "-y", timeout=60)
                if not all((accepted / m).exists() for m in self.minion_ids):
                    raise RuntimeError(f"salt-key -A -y failed: {res.stdout}{res.stderr}")
            progress(f"accepted key {', '.join(self.minion_ids)}")
            progress("waiting for test.ping…")
            self._wait_ping(deadline)
            progress(f"{', '.join(self.minion_ids)} answered test.ping after "
                     f"{time.monotonic() - t0:.1f} s")
        except BaseException as exc:
            logs = self._log_tails()
            self.stop()
            if isinstance(exc, (RuntimeError, subprocess.SubprocessError)):
                raise RuntimeError(f"{exc}\n{logs}") from exc
            raise

    def stop(self) -> None:
        """Stop every process started here (idempotent); remove root if we created it."""
        # Minions first, with SIGKILL (salt-minion sleeps 5 s on SIGTERM before it
        # exits), then the master, which exits cleanly on SIGTERM in under a second.
        for name in sorted(self._procs, key=lambda n: n == "master"):
            _kill_group(self._procs.pop(name), grace=0 if name != "master" else 5)
        if self._created_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def stop_master(self) -> None:
        """Kill only the master (and its workers); the minion(s) keep running.

        SIGKILL on purpose: on SIGTERM the master closes its publisher ~0.3 s before
        its request server; a minion that reconnects in that window loses its return
        channel, and the first test.ping after start_master() then takes ~60 s."""
        proc = self._procs.pop("master", None)
        if proc is not None:
            _kill_group(proc, grace=0)

    def start_master(self, timeout: float = 60, wait_minions: bool = True) -> None:
        """(Re)start the master; return once its event bus accepts connections and,
        unless ``wait_minions`` is false, every minion answers test.ping again (on
        failure, kill it and raise)."""
        if "master" in self._procs:
            raise RuntimeError("the master is already running")
        deadline = time.monotonic() + timeout
        self._spawn("master", "salt-master", self.config_dir)
        try:
            self._wait_event_bus(deadline)
            if wait_minions:
                self._wait_ping(deadline)
        except RuntimeError as exc:
            logs = self._log_tails()
            self.stop_master()
            raise RuntimeError(f"{exc}\n{logs}") from exc

    def restart_minion(self, mid: str = "minion1") -> None:
        """Kill minion ``mid`` and start it again (it re-submits its key if deleted)."""
        name = f"minion-{mid}"
        proc = self._procs.pop(name, None)
        if proc is not None:
            _kill_group(proc, grace=0)
        self._spawn(name, "salt-minion", self._minion_conf[mid])

    def key_pending(self, mid: str = "minion1") -> bool:
        """True while minion ``mid``'s key waits for acceptance."""
        return (self._pki_dir / "minions_pre" / mid).exists()

    def add_pending_key(self, mid: str, like: str = "minion1") -> None:
        """Put a key for ``mid`` in ``salt-key -L``'s unaccepted list, as a minion's first
        contact would: minion ``like``'s accepted public key (a real one) under
        ``minions_pre/<mid>``. Nothing runs as ``mid``: delete the key when done
        (``salt_key("-d", mid, "-y")``), or commands to ``*`` wait for it once accepted."""
        pending = self._pki_dir / "minions_pre"
        pending.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._pki_dir / "minions" / like, pending / mid)

    def salt_key(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``salt-key -c config_dir <args>``."""
        return self._run("salt-key", *args, timeout=timeout)

    def wait_ping(self, timeout: float = 60) -> None:
        """Return once every minion answers test.ping; RuntimeError after ``timeout``."""
        self._wait_ping(time.monotonic() + timeout)

    def __enter__(self) -> PrivateSalt:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def salt_cmd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``salt -c config_dir --out json <args>`` and return the finished process."""
        return self._run("salt", "--out", "json", *args, timeout=timeout)

    def fire_event(self, data: dict, tag: str) -> bool:
        """Fire one event on the master's event bus with Salt's own client code."""
        event = _import_salt().utils.event.get_master_event(
            self.master_opts(), str(self.sock_dir), listen=False)
        try:
            return bool(event.fire_event(data, tag))
        finally:
            event.destroy()

    def master_opts(self) -> dict:
        """The master's fully parsed options (salt.config.master_config)."""
        return _import_salt().config.master_config(str(self.master_config_path))

    # ---------------------------------------------------------------- internals
    def _write_configs(self) -> None:
        import yaml  # PyYAML is a dependency of salt

        if self.root is None:
            self.root, self._created_root = Path(tempfile.mkdtemp(prefix="saltnado-")), True
        self.root = Path(self.root).resolve()
        self.config_dir = self.root / "conf"
        self.master_config_path = self.config_dir / "master"
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.publish_port, self.ret_port, free_api = _free_ports(3)
        self.api_port = self.api_port or free_api
        user = getpass.getuser()
        master = {
            "root_dir": str(self.root), "user": user, "interface": "127.0.0.1",
            "publish_port": self.publish_port, "ret_port": self.ret_port,
            "log_file": str(self.root / "logs" / "master.log"),
            "key_logfile": str(self.root / "logs" / "key.log"),
            "log_level_logfile": "warning",
            "presence_events": True, "loop_interval": 5,
            "netapi_enable_clients": NETAPI_CLIENTS,
            "external_auth": {"auto": {self.username: [".*", "@runner", "@wheel", "@jobs"], **self.eauth_users}},
            "open_mode": False, "auto_accept": False,
            self.api_block: self.api_block_values(self.api_block, self.api_port, self.api_opts),
            **self.extra_master_opts,
        }
        self.master_config_path.write_text(yaml.safe_dump(master, sort_keys=False))
        for i, mid in enumerate(self.minion_ids):
            mroot = self.root if i == 0 else self.root / f"minion-{mid}"
            self._minion_conf[mid] = mconf = self.config_dir if i == 0 else mroot / "conf"
            mconf.mkdir(parents=True, exist_ok=True)
            minion = {
                "root_dir": str(mroot), "id": mid, "user": user,
                "master": "127.0.0.1", "master_port": self.ret_port,
                # must lie under its own root_dir, or salt prefixes it with root_dir
                "log_file": str(mroot / "logs" / f"minion-{mid}.log"),
                "log_level_logfile": "warning",
                **FAST_MINION_OPTS,
            }
            (mconf / "minion").write_text(yaml.safe_dump(minion, sort_keys=False))
        # Read back where salt puts things. sock_dir is left at its default
        # (<root>/var/run/salt/master): an explicit sock_dir longer than
        # len(cachedir) + 10 is silently replaced by <cachedir>/.salt-unix.
        opts = self.master_opts()
        self.sock_dir, self._pki_dir = Path(opts["sock_dir"]), Path(opts["pki_dir"])
        deepest = self.root / f"minion-{max(self.minion_ids, key=len)}/var/run/salt/minion"
        if len(str(deepest)) + 40 > 107:  # AF_UNIX socket paths are limited to 107 bytes
            raise RuntimeError(f"root {self.root} is too deep for Unix socket paths")

    @staticmethod
    def api_block_values(block: str, port: int, extra: dict | None = None) -> dict:
        """A loopback, plain-HTTP API block for ``block`` (rest_tornado or rest_cherrypy),
        in that server's own key names, with ``extra`` keys."""
        if block == "rest_cherrypy":
            return {"port": port, "host": "127.0.0.1", "disable_ssl": True, **(extra or {})}
        return {"port": port, "address": "127.0.0.1", "disable_ssl": True, "websockets": True, **(extra or {})}

    def write_api_config(self, directory: Path, block: str, port: int, extra: dict | None = None) -> Path:
        """A copy of the master config in ``directory`` (for ``salt-api -c directory``)
        whose only API block is ``block`` on ``port``; salt-api's pid and log files
        go there too, so two salt-apis of one master do not share them. Returns
        the master file's path."""
        import yaml

        master = yaml.safe_load(self.master_config_path.read_text())
        for name in ("rest_tornado", "rest_cherrypy"):
            master.pop(name, None)
        directory.mkdir(parents=True, exist_ok=True)
        master[block] = self.api_block_values(block, port, extra)
        master["api_pidfile"] = str(directory / "salt-api.pid")
        master["api_logfile"] = str(directory / "salt-api.log")
        path = directory / "master"
        path.write_text(yaml.safe_dump(master, sort_keys=False))
        return path

    def _spawn(self, name: str, script: str, conf: Path) -> None:
        cmd = [_script(script), "-c", str(conf), "-l", "warning"]
        if script == "salt-minion":
            # otherwise salt-minion runs the minion in a "keepalive" child process
            # and does not exit on SIGTERM at all
            cmd.append("--disable-keepalive")
        assert self.root is not None, "start() sets the root first"
        with open(self.root / "logs" / f"{name}.out", "ab") as out:
            self._procs[name] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.root)

    def _run(self, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([_script(script), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def _poll(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        while not check():
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {proc.returncode} "
                                       f"while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _wait_event_bus(self, deadline: float) -> None:
        ipc = self.sock_dir / "master_event_pub.ipc"
        self._poll(lambda: _ipc_accepts(ipc), deadline, f"the master event bus {ipc}")

    def _wait_ping(self, deadline: float) -> None:
        def answered() -> bool:
            # A test.ping published just before a minion (re)connects is lost, and the
            # CLI then waits -t plus gather_job_timeout (10 s): cut attempts short.
            try:
                res = self.salt_cmd("--static", "-t", "2", "-L", ",".join(self.minion_ids),
                                    "test.ping", timeout=6)
                out = json.loads(res.stdout or "{}")
            except (subprocess.TimeoutExpired, ValueError):
                return False
            return isinstance(out, dict) and all(out.get(m) is True for m in self.minion_ids)

        self._poll(answered, deadline, "test.ping to answer")

    def _log_tails(self, lines: int = 25) -> str:
        outs = sorted((self.root / "logs").glob("*.out")) if self.root else []
        return "\n".join(
            f"--- {p.name} (tail) ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
            for p in outs if p.stat().st_size)


if __name__ == "__main__":
    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    ps, t = PrivateSalt(), time.monotonic()
    ps.start(progress=say)
    say(f"started in {time.monotonic() - t:.1f} s: config_dir={ps.config_dir} "
        f"sock_dir={ps.sock_dir} api_port={ps.api_port}")
    groups = [p.pid for p in ps._procs.values()]
    try:
        say(f"fire_event -> {ps.fire_event({'hello': 'world'}, 'saltnado/demo/hello')}")
        res = ps.salt_cmd("*", "test.ping")
        say(f"salt '*' test.ping -> rc={res.returncode} {' '.join(res.stdout.split())}")
        t = time.monotonic()
        ps.stop_master()
        say(f"stop_master took {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        ps.start_master()
        say(f"start_master (until test.ping answers) took {time.monotonic() - t:.1f} s")
        groups += [p.pid for p in ps._procs.values()]
    finally:
        t = time.monotonic()
        ps.stop()
        say(f"stop took {time.monotonic() - t:.1f} s")
    left = [g for g in groups if _group_alive(g)]
    say(f"LEFTOVER process groups: {left}" if left else "no salt process left")
    sys.exit(1 if left else 0)
