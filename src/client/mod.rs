//! A small blocking Kafka client (std sockets + kafka-protocol), used by the CLI and tests.
