//! Replication between brokers: a partition's followers copy its leader's log over Kafka's
//! Fetch, and the leader commits what every in-sync replica has.
//!
//! - [`replicas`] (pure): on the leader, what it knows of each follower (log end offset, when
//!   it was last caught up) and the high watermark that follows from it; the ISR candidates
//!   for the controller's ISR changes.
//! - [`isr`]: on the leader, a task per shard that proposes ISR changes to the controller
//!   (AlterPartition): followers lagging past `replica.lag.time.max.ms` out, caught-up ones in.
//! - [`fetcher`]: on a follower, the tasks that fetch from the leaders. Each shard runs one
//!   fetcher per leader broker for the partitions it owns, with one connection, and batches
//!   all of them in one Fetch (as Kafka's `ReplicaFetcherThread`).
//!
//! Everything here runs on the shard that owns the partition; a follower's fetcher state lives
//! there too. Nothing crosses cores: the leader's side is the ordinary fetch path on the
//! leader's owning shard.

pub mod fetcher;
pub mod isr;
pub mod replicas;
