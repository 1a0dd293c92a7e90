"""A farm configured for signed messages runs signed tasks and refuses unsigned ones."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from dockyard.config.settings import Settings
from tests.farm.conftest import CALLER_REDIS_URL, WORKER_REDIS_URL, WorkerProcess, with_db

SIGNED_DB = "11"  # a farm of its own: its worker must not see the other tests' unsigned tasks


def make_certificate(directory: Path) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard-test-signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    (directory / "signer.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ))
    (directory / "store").mkdir()
    for path in (directory / "signer.pem", directory / "store" / "signer.pem"):
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return {
        "DOCKYARD_SECURITY_KEY": str(directory / "signer.key"),
        "DOCKYARD_SECURITY_CERTIFICATE": str(directory / "signer.pem"),
        "DOCKYARD_SECURITY_CERT_STORE": str(directory / "store" / "*.pem"),
    }


@pytest.fixture
def signed_farm(tmp_path: Path, settings: Settings) -> Iterator[dict[str, str]]:
    env = {**make_certificate(tmp_path), "DOCKYARD_REDIS_URL": with_db(WORKER_REDIS_URL, SIGNED_DB)}
    worker = WorkerProcess(f"test-signed-{uuid.uuid4().hex[:6]}", "unix:///var/run/docker.sock", tmp_path / "signed.log", env)
    worker.start()
    deadline = time.monotonic() + 60
    while "ready." not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "ready." in worker.log(), worker.log()
    yield {**env, "LOG": str(worker.log_path)}
    worker.stop()
    connection = redis.Redis.from_url(env["DOCKYARD_REDIS_URL"])
    connection.flushdb()
    connection.close()


def send(env: dict[str, str], image: str, project: Path, *, signed: bool) -> subprocess.CompletedProcess[str]:
    """Send a build by name from another process, signed or not, and wait briefly for its result."""
    child_env = {**os.environ, **{k: v for k, v in env.items() if k != "LOG"}}
    child_env["DOCKYARD_REDIS_URL"] = with_db(CALLER_REDIS_URL, SIGNED_DB)  # the sender is a caller
    if not signed:
        for name in ("DOCKYARD_SECURITY_KEY", "DOCKYARD_SECURITY_CERTIFICATE", "DOCKYARD_SECURITY_CERT_STORE"):
            child_env.pop(name)
    code = (
        "import sys\nfrom dockyard.workers.app import app\n"
        "r = app.send_task('dockyard.build_docker_image', kwargs={'image_name': sys.argv[1], 'path': sys.argv[2], 'tag': 'v'})\n"
        "print(r.get(timeout=float(sys.argv[3]))['image'])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, image, str(project), "60" if signed else "8"],
        env=child_env, capture_output=True, text=True, timeout=120,
    )


def test_signed_tasks_run_and_unsigned_ones_are_refused(signed_farm: dict[str, str], repo: str, project: Path) -> None:
    signed = send(signed_farm, f"{repo}-signed", project, signed=True)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.strip() == f"{repo}-signed:v"

    unsigned = send(signed_farm, f"{repo}-unsigned", project, signed=False)
    assert unsigned.returncode != 0 and "TimeoutError" in unsigned.stderr, "no result: the task never ran"
    log = Path(signed_farm["LOG"]).read_text()
    assert "Refusing to deserialize untrusted content of type json" in log
