"""The library's log messages reach Python's logging (logger "tendril"), from the
engine's own threads as from the caller's, with the levels mapped; TENDRIL_LOG_FILE
keeps them in the file instead. Each case runs in a fresh interpreter: the library
reads TENDRIL_LOG once per process (the suite runs with TENDRIL_LOG=error)."""
import os
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    sys.path.insert(0, {here!r})
    records = []

    class Keep(logging.Handler):
        def emit(self, r):
            records.append((r.name, r.levelname, r.getMessage()))

    log = logging.getLogger("tendril")
    log.addHandler(Keep())
    log.setLevel(logging.DEBUG)
    log.propagate = False
    from tendril_peer import make_engine, provider
    import tendril

    # An explicit provider that the environment overrides: the engine warns, naming both.
    os.environ["TENDRIL_PROVIDER"] = provider()
    other = "shm" if provider() != "shm" else "tcp"
    e = tendril.TransferEngine(nets_per_gpu=1, cuda_devices=[], provider=other,
                               nics=["lo"] if "tcp" in provider() else None)
    e.stop()
    for r in records:
        print("RECORD", *r, sep="|")
    """
)


def run(env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(here=HERE)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    recs = [line.split("|")[1:] for line in out.stdout.splitlines() if line.startswith("RECORD|")]
    return recs, out.stderr


def test_library_messages_reach_python_logging(prov):
    recs, err = run({"TENDRIL_LOG": "warn"})
    warn = [r for r in recs if "TENDRIL_PROVIDER=" in r[2]]
    assert warn, (recs, err)
    name, level, msg = warn[0]
    assert name == "tendril" and level == "WARNING"
    assert f"TENDRIL_PROVIDER={prov} overrides the provider" in msg and "te_config.provider" in msg
    assert "TENDRIL_PROVIDER" not in err  # handled by logging, not printed by the library


def test_debug_messages_with_tendril_log_debug():
    recs, err = run({"TENDRIL_LOG": "debug"})
    assert any(r[1] == "DEBUG" for r in recs) or any(r[1] == "INFO" for r in recs), (recs, err)


def test_log_file_keeps_the_messages(tmp_path):
    path = tmp_path / "tendril.log"
    recs, err = run({"TENDRIL_LOG": "warn", "TENDRIL_LOG_FILE": str(path)})
    assert not [r for r in recs if "TENDRIL_PROVIDER=" in r[2]]
    text = path.read_text()
    assert "warn: TENDRIL_PROVIDER=" in text and " tendril[" in text
