"""Reaching a Ray cluster: :class:`RayConfig` (where, how many workers, how big a chunk) and :func:`connected`.

Ray is an optional dependency (``pip install "latelex[ray]"``) and is imported only when a function here is called.

Connecting is bounded. ``ray.init(address=...)`` retries an unreachable GCS for many minutes (20 attempts of about
40 seconds each in Ray 2.x), so an address is checked first: a TCP connection to the canonical ``host:port`` (a
refused or unroutable address fails at once, or after ``connect_timeout`` seconds), then a GCS handshake run in a
daemon thread that is abandoned after ``connect_timeout`` seconds (a port that answers but is not a Ray head). Only
then is ``ray.init`` called. Every failure is one line: a :class:`ClusterError` naming the address and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import ConfigError, InputError, LatelexError

logger = logging.getLogger(__name__)

__all__ = ["ClusterError", "RayConfig", "connect", "connected", "require_ray", "worker_count"]

#: What the user names to start a fresh local cluster in this process (``--ray`` without an address).
LOCAL = "local"


class ClusterError(LatelexError):
    """Ray is not installed, a cluster cannot be reached, or its workers keep dying."""


@dataclass(frozen=True)
class RayConfig:
    """How a build uses Ray.

    ``address``: ``None`` (Ray's default: ``RAY_ADDRESS`` if set, else a new local cluster), ``"local"`` (a new
    local cluster), ``"auto"`` (the cluster already running on this machine) or ``host:port`` / ``ray://host:port``
    of a running cluster. An already initialised Ray in this process is used as it is, whatever the address.
    ``workers``: encoder actors (default: the cluster's CPUs divided by ``cpus_per_worker``, and its GPUs divided by
    ``gpus_per_worker`` when that is above 0; at least 1). ``chunk_size``: documents per chunk, the unit of work
    handed to a worker and recorded as done. ``cpus_per_worker`` / ``gpus_per_worker``: what each actor reserves
    (a worker with a GPU share runs its model on ``cuda``). ``connect_timeout``: seconds allowed to reach
    ``address``. ``max_restarts``: how many times Ray restarts a worker whose process died (its chunks are
    retried as many times; encoding is idempotent).
    """

    address: str | None = None
    workers: int | None = None
    chunk_size: int = 512
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    connect_timeout: float = 15.0
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(f"the Ray address must be host:port, ray://host:port, 'auto' or 'local', not "
                              f"{self.address!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ConfigError(f"workers must be a positive integer (or None: one per CPU), not {self.workers!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive number of documents, not {self.chunk_size!r}")
        for name in ("cpus_per_worker", "gpus_per_worker", "connect_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, not {value!r}")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise ConfigError("a worker must reserve some CPU or GPU (cpus_per_worker or gpus_per_worker above 0)")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < -1:
            raise ConfigError(f"max_restarts must be an integer >= -1 (-1: always), not {self.max_restarts!r}")

    @classmethod
    def of(cls, value: Any) -> "RayConfig | None":
        """A config from what ``Retriever.build(ray=...)`` accepts: a RayConfig, ``True`` (a local cluster), an
        address string; ``None`` or ``False``: no Ray."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(address=value)
        raise InputError(f"ray must be a RayConfig, an address string or True, not {type(value).__name__}")

    @property
    def device(self) -> str:
        """Where each worker runs its model."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    @property
    def threads(self) -> int:
        """Torch threads per worker: its CPU share, at least one."""
        return max(1, int(round(self.cpus_per_worker)))


def require_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ClusterError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError('Ray is not installed; pip install "latelex[ray]" to encode and build on a Ray '
                           'cluster') from None
    return ray


def connect(config: RayConfig) -> tuple[Any, bool]:
    """Connect this process to the cluster ``config`` names (or start a local one); returns ``(ray, started)``
    where ``started`` says whether this call initialised Ray (and so should shut it down)."""
    ray = require_ray()
    if ray.is_initialized():
        if config.address not in (None, LOCAL, "auto"):
            logger.info("Ray is already initialised in this process; using that cluster, not %s", config.address)
        return ray, False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "runtime_env": {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}}
    address = config.address
    if address is not None and address != LOCAL:
        _check_reachable(address, config.connect_timeout)
    try:
        if address is None:
            ray.init(**options)
        else:
            ray.init(address=address, **options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... with multi-line messages
        where = "start a local Ray cluster" if address in (None, LOCAL) else f"connect to the Ray cluster at {address}"
        raise ClusterError(f"could not {where}: {_first_line(exc)}{_advice(address)}") from None
    return ray, True


@contextlib.contextmanager
def connected(config: RayConfig) -> Iterator[Any]:
    """:func:`connect` for the block; Ray is shut down at its end if the block started it. Yields ``ray``."""
    ray, started = connect(config)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def worker_count(ray: Any, config: RayConfig) -> int:
    """``config.workers``, or as many workers as the cluster's CPUs (and GPUs, for GPU workers) hold; at least 1."""
    resources = ray.cluster_resources()
    if config.gpus_per_worker > 0 and resources.get("GPU", 0) < config.gpus_per_worker:
        raise ClusterError(f"the Ray cluster has {resources.get('GPU', 0):g} GPUs, so no worker can have "
                           f"{config.gpus_per_worker:g}; add GPU nodes or use CPU workers (gpus_per_worker=0)")
    if config.workers is not None:
        wanted = config.workers
    else:
        fits = []
        if config.cpus_per_worker > 0:
            fits.append(int(resources.get("CPU", 1) // config.cpus_per_worker))
        if config.gpus_per_worker > 0:
            fits.append(int(resources.get("GPU", 0) // config.gpus_per_worker))
        wanted = max(1, min(fits))
    need_cpu = wanted * config.cpus_per_worker
    if need_cpu > resources.get("CPU", 0):
        logger.warning("%d Ray workers of %g CPUs each ask for more than the cluster's %g CPUs; the extra workers "
                       "start only when the cluster grows", wanted, config.cpus_per_worker, resources.get("CPU", 0))
    return wanted


# ---------------------------------------------------------------------- bounded reachability check


def _check_reachable(address: str, timeout: float) -> None:
    if address == "auto":
        return  # Ray finds the local cluster itself and fails at once when there is none
    client = address.startswith("ray://")
    canonical = address[len("ray://"):] if client else _canonical(address)
    host, sep, port = canonical.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ClusterError(f"{address!r} is not a Ray address; give host:port (e.g. 10.0.0.5:6379), "
                           f"ray://host:10001, 'auto' or 'local'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=max(timeout, 0.1)):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise ClusterError(f"cannot reach a Ray cluster at {address} ({reason}){_advice(address)}") from None
    if not client and not _gcs_answers(canonical, timeout):
        raise ClusterError(f"{address} accepts connections but no Ray head answered there within {timeout:g} s; "
                           f"give the address `ray start --head` printed (host:6379 by default)")


def _canonical(address: str) -> str:
    """``host:port`` as ``ray.init`` will dial it (Ray turns localhost into this node's address)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) or address
    except ValueError:
        raise ClusterError(f"{address!r} is not a Ray address; give host:port, ray://host:10001, 'auto' or "
                           f"'local'") from None
    except Exception:  # a private helper: if it moves, dial the address as given
        return address


def _gcs_answers(address: str, timeout: float) -> bool:
    """Whether a Ray GCS answers at ``address`` within ``timeout`` seconds (the handshake runs in a daemon thread,
    abandoned when late, because Ray's own client waits about 40 seconds)."""
    try:
        from ray._raylet import GcsClient
    except ImportError:  # a private class: if it moves, leave the check to ray.init
        return True
    answer: dict[str, Any] = {}

    def handshake() -> None:
        try:
            answer["cluster"] = GcsClient(address=address).cluster_id
        except Exception as exc:  # noqa: BLE001 - any failure means "no GCS here"
            answer["error"] = exc

    thread = threading.Thread(target=handshake, name="latelex-ray-probe", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.1))
    return "cluster" in answer


def _advice(address: str | None) -> str:
    if address in (None, LOCAL):
        return "; check the Ray installation (`ray start --head` in a shell shows the cause)"
    return ("; start one with `ray start --head` there, give its address as host:port (`ray status` prints it), or "
            "use --ray without an address (Python: ray=True) for a local cluster")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__).rstrip(".")
