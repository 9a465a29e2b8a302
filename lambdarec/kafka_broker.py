"""The local Kafka broker: one KRaft node (broker and controller in one JVM) on loopback.

Who calls it: `lambdarec kafka start|stop|bootstrap` (and so `infra/local/start-kafka.sh` /
`stop-kafka.sh`), `make setup` (`python -m lambdarec.kafka_broker` resolves the JARs) and the tests'
`kafka_broker` fixture through those scripts.

The broker is Apache Kafka's own `kafka.Kafka` from Maven Central's `org.apache.kafka:kafka_2.13`
artifact and its runtime dependencies, resolved once by Maven into `Settings.kafka.jars_dir` (its own
folder: these JARs must never join Spark's classpath in `Settings.jars_dir`). Its state (KRaft
metadata, topic logs) lives under `<data_dir>/kafka`, its pid, log and bootstrap address under
`<data_dir>/run`, like the private redis-server.

Broker version: the Spark 4.2 Kafka source ships kafka-clients 3.9.2; Kafka 4.x brokers serve every
client from 2.1 on, and 4.1 is the newest line Maven Central has complete here.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from feature_store.settings import Settings, load_settings

KAFKA_VERSION = "4.1.1"
# Kafka logs through SLF4J 1.x; this binds it to the log4j2 the broker already depends on.
LOG4J_SLF4J_VERSION = "2.24.3"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
SERVICE = "kafka"
HEAP = "-Xmx512m"


class KafkaJarsMissing(RuntimeError):
    """The broker's JARs are not in the project's cache."""


# -- resolving the broker's JARs (make setup) ------------------------------------------------------
def broker_pom(version: str = KAFKA_VERSION) -> str:
    """A throwaway Maven project whose runtime dependencies are the broker's classpath."""
    deps = (
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_SLF4J_VERSION),
    )
    body = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>lambdarec</groupId><artifactId>kafka-broker-classpath</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{body}</dependencies></project>\n"
    )


def broker_jar_paths(libs_dir: Path, version: str = KAFKA_VERSION) -> list[Path]:
    jars = sorted(libs_dir.glob("*.jar"))
    if not (libs_dir / f"kafka_2.13-{version}.jar").exists():
        raise KafkaJarsMissing(
            f"No Kafka {version} broker JARs in {libs_dir}. Run `make setup` (or `python -m lambdarec.kafka_broker`) "
            "once with Maven Central reachable; later runs work offline."
        )
    return jars


def resolve_broker_jars(libs_dir: Path, version: str = KAFKA_VERSION) -> list[Path]:
    """Copy the broker's runtime classpath from Maven Central into `libs_dir` (Maven's own local
    repository beside it, never ~/.m2); no-op when present."""
    try:
        return broker_jar_paths(libs_dir, version)
    except KafkaJarsMissing:
        pass
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaJarsMissing(
            "resolving the Kafka broker needs Maven (`mvn`; Debian: apt-get install maven)"
        )
    with tempfile.TemporaryDirectory() as project:
        pom = Path(project) / "pom.xml"
        pom.write_text(broker_pom(version))
        subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs_dir}",
                f"-Dmaven.repo.local={libs_dir.parent / 'm2'}",
            ],
            check=True,
        )
    return broker_jar_paths(libs_dir, version)


# -- configuration (pure) --------------------------------------------------------------------------
def server_properties(*, host: str, port: int, controller_port: int, log_dir: Path, partitions: int) -> str:
    """A single-node KRaft broker on loopback. Messages carry the broker's append time
    (LogAppendTime), so a record's timestamp is its bus time, as a Redis Stream entry id is."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(partitions),
        "log.message.timestamp.type": "LogAppendTime",
        # One node: internal topics cannot have more replicas than that.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


LOG4J2_PROPERTIES = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    An id that starts with "-" is drawn again, as Kafka's own Uuid.randomUuid does: the storage
    tool would read it as an option and refuse to format.
    """
    while True:
        candidate = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def java_command(libs_dir: Path, config_dir: Path, main: str, *args: str) -> list[str]:
    return [
        shutil.which("java") or "java",
        HEAP,
        "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={config_dir / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir}/*",
        main,
        *args,
    ]


# -- the running broker ----------------------------------------------------------------------------
def bootstrap_file(settings: Settings) -> Path:
    return settings.run_dir / "kafka.bootstrap"


def broker_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def answers_metadata(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when the broker serves cluster metadata (it is up, not only listening)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Create the event topic unless it exists (replication 1: one node)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=timeout_s).topics:
        return
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)], request_timeout=timeout_s
        )[topic].result(timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def start_broker(settings: Settings, timeout_s: float = 180.0) -> str:
    """Start the data directory's broker (or find it running) with the settings' event topic;
    returns its bootstrap address."""
    from lambdarec.local_services import ServiceSpec, running_pid, start_service
    from lambdarec.redis_server import free_port

    libs = settings.kafka.jars_dir
    broker_jar_paths(libs)
    if running_pid(settings.run_dir, SERVICE) is not None and bootstrap_file(settings).exists():
        bootstrap = bootstrap_file(settings).read_text().strip()
    else:
        home = broker_dir(settings)
        home.mkdir(parents=True, exist_ok=True)
        host, port, controller_port = "127.0.0.1", free_port(), free_port()
        props = home / "server.properties"
        props.write_text(
            server_properties(
                host=host,
                port=port,
                controller_port=controller_port,
                log_dir=home / "logs",
                partitions=settings.kafka.topic_partitions,
            )
        )
        (home / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if not (home / "logs" / "meta.properties").exists():
            subprocess.run(
                java_command(libs, home, STORAGE_TOOL, "format", "-t", cluster_id(), "-c", str(props)),
                check=True,
                capture_output=True,
            )
        bootstrap = f"{host}:{port}"
        spec = ServiceSpec(
            name=SERVICE, command=java_command(libs, home, BROKER_MAIN, str(props)), port=port, host=host
        )
        start_service(spec, settings.run_dir, ready=lambda: answers_metadata(bootstrap), timeout_s=timeout_s)
        bootstrap_file(settings).write_text(bootstrap)
    ensure_topic(bootstrap, settings.kafka.topic, settings.kafka.topic_partitions)
    return bootstrap


def stop_broker(settings: Settings) -> bool:
    """Stop the data directory's broker; False when none was running."""
    from lambdarec.local_services import stop_service

    bootstrap_file(settings).unlink(missing_ok=True)
    return stop_service(SERVICE, settings.run_dir)


def running_bootstrap(settings: Settings) -> str | None:
    """The bootstrap address of the data directory's broker while it runs."""
    from lambdarec.local_services import running_pid

    path = bootstrap_file(settings)
    if running_pid(settings.run_dir, SERVICE) is None or not path.exists():
        return None
    return path.read_text().strip()


def main() -> int:
    """`python -m lambdarec.kafka_broker`: resolve the broker's JARs (make setup)."""
    settings = load_settings()
    try:
        jars = resolve_broker_jars(settings.kafka.jars_dir)
    except (KafkaJarsMissing, subprocess.CalledProcessError) as exc:
        print(
            f"Could not resolve the Kafka {KAFKA_VERSION} broker from Maven Central: {exc}", file=sys.stderr
        )
        return 1
    print(f"Kafka {KAFKA_VERSION} broker ready in {settings.kafka.jars_dir} ({len(jars)} JARs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
