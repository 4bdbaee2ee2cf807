package sluice;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.LogTruncationException;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Scenarios of Kafka's Java client against a broker, run by the Rust integration tests
 * (tests/java_client.rs). Usage: {@code Driver SCENARIO --bootstrap HOST:PORT [--key value]...}.
 * Each scenario checks what it can itself, fails with an exception on anything wrong, and prints
 * one JSON object as its last line for the test to assert on.
 */
public final class Driver {
    private static final Duration DEADLINE = Duration.ofSeconds(120);

    private final Map<String, String> args;

    private Driver(Map<String, String> args) {
        this.args = args;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (int i = 1; i + 1 < argv.length; i += 2) {
            args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        Driver driver = new Driver(args);
        Object result;
        switch (argv[0]) {
            case "producers": result = driver.producers(); break;
            case "groups": result = driver.groups(); break;
            case "static-membership": result = driver.staticMembership(); break;
            case "admin": result = driver.admin(); break;
            case "wordcount": result = driver.wordcount(); break;
            case "offset-validation": result = driver.offsetValidation(); break;
            default: throw new IllegalArgumentException("unknown scenario " + argv[0]);
        }
        System.out.println(Json.of(result));
        // Kafka Streams and the clients may leave non-daemon threads behind on failure paths.
        System.exit(0);
    }

    private String arg(String name) {
        String value = args.get(name);
        if (value == null) {
            throw new IllegalArgumentException("missing --" + name);
        }
        return value;
    }

    private int intArg(String name, int fallback) {
        return args.containsKey(name) ? Integer.parseInt(args.get(name)) : fallback;
    }

    private Properties common() {
        Properties props = new Properties();
        props.put("bootstrap.servers", arg("bootstrap"));
        return props;
    }

    private Admin admin(Properties extra) {
        Properties props = common();
        props.putAll(extra);
        return Admin.create(props);
    }

    private KafkaProducer<String, String> producer(Map<String, String> settings) {
        Properties props = common();
        props.putAll(settings);
        return new KafkaProducer<>(props, new StringSerializer(), new StringSerializer());
    }

    private KafkaConsumer<String, String> consumer(Map<String, String> settings) {
        Properties props = common();
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.putAll(settings);
        return new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer());
    }

    private static void createTopic(Admin admin, String topic, int partitions, Map<String, String> configs)
            throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1).configs(configs))).all().get();
    }

    /**
     * One topic per producer setting: acks 0, 1 and all (idempotent, the default), and each
     * compression codec with idempotence on. Sends keyed records, then reads each topic back
     * with an assigned consumer and checks every record arrived once, in order, with contiguous
     * offsets per partition.
     */
    private Object producers() throws Exception {
        int records = intArg("records", 20_000);
        int partitions = 3;
        Map<String, Map<String, String>> cases = new LinkedHashMap<>();
        cases.put("acks-0", Map.of("acks", "0"));
        cases.put("acks-1", Map.of("acks", "1"));
        cases.put("acks-all", Map.of("acks", "all"));
        for (String codec : List.of("gzip", "snappy", "lz4", "zstd")) {
            cases.put("codec-" + codec, Map.of("acks", "all", "compression.type", codec, "enable.idempotence", "true"));
        }
        Map<String, Object> result = new LinkedHashMap<>();
        try (Admin admin = admin(new Properties())) {
            for (var entry : cases.entrySet()) {
                String topic = entry.getKey();
                createTopic(admin, topic, partitions, Map.of());
                Map<String, String> settings = new HashMap<>(entry.getValue());
                settings.put("linger.ms", "5");
                try (KafkaProducer<String, String> producer = producer(settings)) {
                    for (int i = 0; i < records; i++) {
                        producer.send(new ProducerRecord<>(topic, "key-" + (i % 97), "value-" + i));
                    }
                    producer.flush();
                }
                result.put(topic, readBack(topic, partitions, records));
            }
        }
        return result;
    }

    /** Reads `topic` from the start until `expected` records came; checks order and offsets. */
    private Map<String, Object> readBack(String topic, int partitions, int expected) {
        List<TopicPartition> assigned = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            assigned.add(new TopicPartition(topic, p));
        }
        Map<Integer, Long> nextOffset = new HashMap<>();
        Map<String, Integer> lastValueOfKey = new HashMap<>();
        int read = 0;
        try (KafkaConsumer<String, String> consumer = consumer(Map.of())) {
            consumer.assign(assigned);
            consumer.seekToBeginning(assigned);
            long deadline = System.nanoTime() + DEADLINE.toNanos();
            while (read < expected) {
                check(System.nanoTime() < deadline, topic + ": read " + read + " of " + expected);
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(200))) {
                    long want = nextOffset.getOrDefault(record.partition(), 0L);
                    check(record.offset() == want, topic + "-" + record.partition() + ": offset " + record.offset()
                            + " after " + (want - 1));
                    nextOffset.put(record.partition(), want + 1);
                    int value = Integer.parseInt(record.value().substring("value-".length()));
                    Integer previous = lastValueOfKey.put(record.key(), value);
                    check(previous == null || previous < value, topic + ": " + record.key() + " out of order");
                    read++;
                }
            }
            // Nothing beyond what was sent (no duplicates from retries).
            Map<TopicPartition, Long> ends = consumer.endOffsets(assigned);
            long total = ends.values().stream().mapToLong(Long::longValue).sum();
            check(total == expected, topic + ": end offsets sum to " + total);
        }
        return Map.of("read", read, "partitions_used", nextOffset.size());
    }

    /**
     * Consumers of one group with the given assignor on a 6-partition topic. The first reads and
     * commits everything alone; a second joins (for the cooperative assignor the first keeps the
     * partitions it is not asked to give up); both read new records, each exactly once, and
     * commit; after both left, a third member resumes at the committed offsets and reads exactly
     * the records produced after that. Reports each member's partitions and what the first had
     * revoked when the second joined.
     */
    private Object groups() throws Exception {
        String assignor = arg("assignor");
        String topic = "groups-" + assignor;
        String group = "group-" + assignor;
        int partitions = 6;
        int records = 600;
        try (Admin admin = admin(new Properties())) {
            createTopic(admin, topic, partitions, Map.of());
        }
        produceNumbered(topic, 0, records);
        String strategy = assignor.equals("range")
                ? "org.apache.kafka.clients.consumer.RangeAssignor"
                : "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";
        Map<String, String> settings = Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, strategy,
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        Set<TopicPartition> revokedFromFirst = new HashSet<>();
        Map<String, Object> result = new LinkedHashMap<>();
        try (KafkaConsumer<String, String> first = consumer(settings);
             KafkaConsumer<String, String> second = consumer(settings)) {
            first.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> revoked) {
                    revokedFromFirst.addAll(revoked);
                }

                public void onPartitionsAssigned(Collection<TopicPartition> assigned) {
                }
            });
            Set<String> seen = new HashSet<>();
            pollUntil(List.of(first), seen, () -> seen.size() == records);
            check(first.assignment().size() == partitions, "first alone has " + first.assignment());
            first.commitSync();
            second.subscribe(List.of(topic));
            pollUntil(List.of(first, second), seen, () -> !first.assignment().isEmpty()
                    && !second.assignment().isEmpty()
                    && first.groupMetadata().generationId() == second.groupMetadata().generationId());
            check(disjointCover(partitions, first.assignment(), second.assignment()),
                    "assignments " + first.assignment() + " / " + second.assignment());
            produceNumbered(topic, records, records);
            pollUntil(List.of(first, second), seen, () -> seen.size() == 2 * records);
            first.commitSync();
            second.commitSync();
            result.put("first", partitionNumbers(first.assignment()));
            result.put("second", partitionNumbers(second.assignment()));
            result.put("generation", second.groupMetadata().generationId());
            result.put("revoked_from_first", partitionNumbers(revokedFromFirst));
        }
        produceNumbered(topic, 2 * records, records);
        try (KafkaConsumer<String, String> third = consumer(settings)) {
            third.subscribe(List.of(topic));
            Set<String> seen = new HashSet<>();
            pollUntil(List.of(third), seen, () -> seen.size() >= records);
            for (String value : seen) {
                check(Integer.parseInt(value) >= 2 * records, "re-read committed record " + value);
            }
            result.put("resumed", seen.size());
        }
        return result;
    }

    /**
     * Static membership: two members with group.instance.id; one closes (static members send no
     * LeaveGroup) and comes back under the same instance id within the session timeout. The
     * group must not rebalance: same generation, same partitions.
     */
    private Object staticMembership() throws Exception {
        String topic = "static";
        int partitions = 4;
        try (Admin admin = admin(new Properties())) {
            createTopic(admin, topic, partitions, Map.of());
        }
        Map<String, Object> result = new LinkedHashMap<>();
        Map<String, String> a = staticSettings("instance-a");
        Map<String, String> b = staticSettings("instance-b");
        try (KafkaConsumer<String, String> first = consumer(a)) {
            first.subscribe(List.of(topic));
            Set<String> seen = new HashSet<>();
            Set<TopicPartition> secondAssignment;
            int generation;
            try (KafkaConsumer<String, String> second = consumer(b)) {
                second.subscribe(List.of(topic));
                pollUntil(List.of(first, second), seen, () -> !first.assignment().isEmpty()
                        && !second.assignment().isEmpty()
                        && first.groupMetadata().generationId() == second.groupMetadata().generationId());
                check(disjointCover(partitions, first.assignment(), second.assignment()),
                        "assignments " + first.assignment() + " / " + second.assignment());
                secondAssignment = new HashSet<>(second.assignment());
                generation = second.groupMetadata().generationId();
            }
            try (KafkaConsumer<String, String> again = consumer(b)) {
                again.subscribe(List.of(topic));
                pollUntil(List.of(first, again), seen, () -> !again.assignment().isEmpty());
                result.put("generation_before", generation);
                result.put("generation_after", again.groupMetadata().generationId());
                result.put("same_partitions", again.assignment().equals(secondAssignment));
                result.put("first_generation", first.groupMetadata().generationId());
            }
        }
        return result;
    }

    private static Map<String, String> staticSettings(String instance) {
        return Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, "static-group",
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000",
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
    }

    private void produceNumbered(String topic, int from, int count) {
        try (KafkaProducer<String, String> producer = producer(Map.of())) {
            for (int i = from; i < from + count; i++) {
                producer.send(new ProducerRecord<>(topic, String.valueOf(i), String.valueOf(i)));
            }
            producer.flush();
        }
    }

    /**
     * KIP-320 offset validation: the consumer checks a position that carries a leader epoch
     * with OffsetsForLeaderEpoch before fetching from it. A position within that epoch's part
     * of the log is kept; one past where the epoch ended is log truncation, which with
     * auto.offset.reset=none surfaces as LogTruncationException naming where the epoch ended.
     */
    private Object offsetValidation() throws Exception {
        String topic = "validated";
        try (Admin admin = admin(new Properties())) {
            createTopic(admin, topic, 1, Map.of());
        }
        produceNumbered(topic, 0, 10);
        TopicPartition partition = new TopicPartition(topic, 0);
        Map<String, Object> result = new LinkedHashMap<>();
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        try (KafkaConsumer<String, String> consumer =
                consumer(Map.of(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none"))) {
            consumer.assign(List.of(partition));
            consumer.seek(partition, new OffsetAndMetadata(5, Optional.of(0), ""));
            List<Long> offsets = new ArrayList<>();
            Set<Integer> epochs = new TreeSet<>();
            while (offsets.size() < 5) {
                check(System.nanoTime() < deadline, "records from offset 5 did not come: " + offsets);
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(200))) {
                    offsets.add(record.offset());
                    epochs.add(record.leaderEpoch().orElse(-1));
                }
            }
            result.put("validated_offsets", offsets);
            result.put("record_epochs", epochs);

            consumer.seek(partition, new OffsetAndMetadata(20, Optional.of(0), ""));
            Object divergent = null;
            while (divergent == null) {
                check(System.nanoTime() < deadline, "no log truncation detected");
                try {
                    check(consumer.poll(Duration.ofMillis(200)).isEmpty(), "records past the log end");
                } catch (LogTruncationException e) {
                    OffsetAndMetadata at = e.divergentOffsets().get(partition);
                    divergent = List.of(at.offset(), at.leaderEpoch().orElse(-1));
                }
            }
            result.put("divergent", divergent);
        }
        return result;
    }

    /** Polls every consumer in turn, collecting values, until `done` holds. */
    private static void pollUntil(List<KafkaConsumer<String, String>> consumers, Set<String> seen,
                                  Supplier<Boolean> done) {
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (!done.get()) {
            check(System.nanoTime() < deadline, "condition not reached; seen " + seen.size());
            for (KafkaConsumer<String, String> consumer : consumers) {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(100))) {
                    check(seen.add(record.value()), "record " + record.value() + " delivered twice");
                }
            }
        }
    }

    private static boolean disjointCover(int partitions, Set<TopicPartition> a, Set<TopicPartition> b) {
        Set<TopicPartition> all = new HashSet<>(a);
        all.addAll(b);
        return all.size() == partitions && a.size() + b.size() == partitions;
    }

    private static List<Integer> partitionNumbers(Collection<TopicPartition> partitions) {
        return partitions.stream().map(TopicPartition::partition).sorted().toList();
    }

    /**
     * The AdminClient calls, each reported as "ok" or the exception's class name (so that the
     * test can tell served calls from refused ones), with what it returned.
     */
    private Object admin() throws Exception {
        Map<String, Object> result = new LinkedHashMap<>();
        String topic = "admin-topic";
        String group = "admin-group";
        Properties props = new Properties();
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        try (Admin admin = admin(props)) {
            result.put("create_topics", outcome(() -> {
                createTopic(admin, topic, 2, Map.of("retention.ms", "3600000"));
                return null;
            }));
            result.put("create_existing", outcome(() -> {
                createTopic(admin, topic, 2, Map.of());
                return null;
            }));
            result.put("list_topics", outcome(() -> new TreeSet<>(admin.listTopics().names().get())));
            result.put("describe_topics", outcome(() -> {
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                return Map.of("partitions", d.partitions().size(), "internal", d.isInternal());
            }));
            long produceTime = System.currentTimeMillis();
            produceNumbered(topic, 0, 100);
            // Each kind of ListOffsets query on its own: they need different request versions.
            Map<String, OffsetSpec> specs = new LinkedHashMap<>();
            specs.put("earliest", OffsetSpec.earliest());
            specs.put("latest", OffsetSpec.latest());
            specs.put("by_timestamp", OffsetSpec.forTimestamp(produceTime - 60_000));
            specs.put("max_timestamp", OffsetSpec.maxTimestamp());
            specs.put("earliest_local", OffsetSpec.earliestLocal());
            specs.put("latest_tiered", OffsetSpec.latestTiered());
            for (var spec : specs.entrySet()) {
                TopicPartition tp = new TopicPartition(topic, 0);
                result.put("list_offsets_" + spec.getKey(), outcome(() ->
                        admin.listOffsets(Map.of(tp, spec.getValue())).partitionResult(tp).get().offset()));
            }
            result.put("create_partitions", outcome(() -> {
                admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
                return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            }));
            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            result.put("describe_configs", outcome(() -> {
                Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
                ConfigEntry retention = config.get("retention.ms");
                return retention == null ? null : retention.value();
            }));
            result.put("incremental_alter_configs", outcome(() -> {
                AlterConfigOp op = new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"),
                        AlterConfigOp.OpType.SET);
                admin.incrementalAlterConfigs(Map.of(resource, List.of(op))).all().get();
                Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
                return config.get("retention.ms").value();
            }));
            result.put("delete_records", outcome(() -> {
                TopicPartition tp = new TopicPartition(topic, 0);
                long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(10))).lowWatermarks()
                        .get(tp).get().lowWatermark();
                return low;
            }));
            // A group that read everything and committed, then closed, so that it is empty.
            int partitionCount = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            try (KafkaConsumer<String, String> consumer = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, group))) {
                consumer.subscribe(List.of(topic));
                Set<String> seen = new HashSet<>();
                pollUntil(List.of(consumer), seen, () -> consumer.assignment().size() == partitionCount
                        && consumer.endOffsets(
                        consumer.assignment()).entrySet().stream().allMatch(e -> consumer.position(e.getKey()) == e.getValue()));
                consumer.commitSync();
            }
            result.put("list_groups", outcome(() -> admin.listGroups().all().get().stream()
                    .map(g -> g.groupId()).sorted().toList()));
            result.put("describe_groups", outcome(() -> {
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
                return Map.of("state", d.groupState().toString(), "members", d.members().size());
            }));
            result.put("list_group_offsets", outcome(() -> {
                Map<TopicPartition, OffsetAndMetadata> offsets =
                        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
                return offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            }));
            result.put("alter_group_offsets", outcome(() -> {
                TopicPartition tp = new TopicPartition(topic, 0);
                admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(20))).all().get();
                return admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tp).offset();
            }));
            result.put("delete_group_offsets", outcome(() -> {
                TopicPartition tp = new TopicPartition(topic, 1);
                admin.deleteConsumerGroupOffsets(group, Set.of(tp)).all().get();
                return admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().containsKey(tp);
            }));
            result.put("delete_groups", outcome(() -> {
                admin.deleteConsumerGroups(List.of(group)).all().get();
                return admin.listGroups().all().get().stream().anyMatch(g -> g.groupId().equals(group));
            }));
            result.put("describe_cluster", outcome(() -> admin.describeCluster().nodes().get().size()));
            result.put("delete_topics", outcome(() -> {
                admin.deleteTopics(List.of(topic)).all().get();
                return admin.listTopics().names().get().contains(topic);
            }));
        }
        return result;
    }

    private interface Call {
        Object run() throws Exception;
    }

    /** {"ok": value} or {"error": the cause's class name}. */
    private static Map<String, Object> outcome(Call call) {
        Map<String, Object> out = new LinkedHashMap<>();
        try {
            out.put("ok", call.run());
        } catch (Exception e) {
            Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
            out.put("error", cause.getClass().getSimpleName());
            out.put("message", String.valueOf(cause.getMessage()));
        }
        return out;
    }

    /**
     * Kafka Streams word count (groupBy + count into a persistent state store, so with a
     * repartition topic and a changelog topic), at_least_once. Produces `--lines` lines, then
     * runs until the output topic shows the counts of every line produced so far (`--round` R
     * means R batches of lines were produced in all, by this and earlier runs). Prints
     * "counted" and waits for a line on stdin before the next round while the application keeps
     * running (the test restarts the broker in between), for `--rounds` rounds.
     */
    private Object wordcount() throws Exception {
        String app = arg("app-id");
        int lines = intArg("lines", 200);
        int rounds = intArg("rounds", 2);
        String input = app + "-input";
        String output = app + "-output";
        try (Admin admin = admin(new Properties())) {
            createTopic(admin, input, 2, Map.of());
            createTopic(admin, output, 2, Map.of());
        }
        Properties props = common();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        props.put(StreamsConfig.STATE_DIR_CONFIG, arg("state-dir"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, arg("guarantee"));
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "200");
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, "0");
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.split(" ")))
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        Map<String, Object> result = new LinkedHashMap<>();
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        Map<String, Long> latest = new TreeMap<>();
        try (KafkaStreams streams = new KafkaStreams(builder.build(), props);
             KafkaConsumer<String, Long> reader = new KafkaConsumer<>(countsReaderProps(),
                     new StringDeserializer(), Serdes.Long().deserializer())) {
            streams.start();
            List<TopicPartition> outputPartitions = List.of(new TopicPartition(output, 0),
                    new TopicPartition(output, 1));
            reader.assign(outputPartitions);
            reader.seekToBeginning(outputPartitions);
            for (int round = 1; round <= rounds; round++) {
                if (round > 1) {
                    check(stdin.readLine() != null, "stdin closed before round " + round);
                    awaitRejoined(app, streams);
                }
                try (KafkaProducer<String, String> producer = producer(Map.of())) {
                    for (int i = 0; i < lines; i++) {
                        producer.send(new ProducerRecord<>(input, String.valueOf(i), WORDS[i % WORDS.length]));
                    }
                    producer.flush();
                }
                Map<String, Long> expected = expectedCounts(lines * round);
                long deadline = System.nanoTime() + DEADLINE.toNanos();
                while (!latest.equals(expected)) {
                    if (System.nanoTime() > deadline) {
                        throw new IllegalStateException("round " + round + ": counts " + latest + " want " + expected
                                + "; streams " + streams.state() + "; offsets " + offsets(app, input));
                    }
                    for (ConsumerRecord<String, Long> record : reader.poll(Duration.ofMillis(200))) {
                        latest.put(record.key(), record.value());
                    }
                }
                awaitCommitted(app, input);
                result.put("round_" + round, new TreeMap<>(latest));
                System.out.println("counted " + round);
                System.out.flush();
            }
            try (Admin admin = admin(new Properties())) {
                result.put("topics", new TreeSet<>(admin.listTopics().names().get()));
            }
            result.put("state", streams.state().toString());
        }
        return result;
    }

    /**
     * Waits until the application is a member of its group again after a broker restart.
     * Sluice keeps no group membership across a restart (docs/COMPATIBILITY.md): a member
     * notices only at its next heartbeat, and whatever it processed in between is processed
     * again after it rejoins, which at_least_once allows. Input produced only from here on is
     * counted exactly once.
     */
    private void awaitRejoined(String app, KafkaStreams streams) throws Exception {
        try (Admin admin = admin(new Properties())) {
            long deadline = System.nanoTime() + DEADLINE.toNanos();
            while (true) {
                ConsumerGroupDescription group = admin.describeConsumerGroups(List.of(app)).all().get().get(app);
                if (group.groupState() == GroupState.STABLE && group.members().size() == 1
                        && streams.state() == KafkaStreams.State.RUNNING) {
                    return;
                }
                check(System.nanoTime() < deadline, "group " + group + ", streams " + streams.state());
                Thread.sleep(100);
            }
        }
    }

    /** Committed, log start and log end offsets of the application's input and repartition topics. */
    private String offsets(String app, String input) throws Exception {
        List<TopicPartition> partitions = streamsSources(app, input);
        try (Admin admin = admin(new Properties())) {
            Map<TopicPartition, OffsetSpec> earliest = new HashMap<>();
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            partitions.forEach(tp -> earliest.put(tp, OffsetSpec.earliest()));
            partitions.forEach(tp -> latest.put(tp, OffsetSpec.latest()));
            var starts = admin.listOffsets(earliest).all().get();
            var ends = admin.listOffsets(latest).all().get();
            var committed = admin.listConsumerGroupOffsets(app).partitionsToOffsetAndMetadata().get();
            StringBuilder out = new StringBuilder();
            for (TopicPartition tp : partitions) {
                out.append(String.format("%s committed %s start %d end %d; ", tp, committed.get(tp),
                        starts.get(tp).offset(), ends.get(tp).offset()));
            }
            return out.toString();
        }
    }

    private static List<TopicPartition> streamsSources(String app, String input) {
        List<TopicPartition> partitions = new ArrayList<>();
        for (String topic : List.of(input, app + "-counts-repartition")) {
            partitions.add(new TopicPartition(topic, 0));
            partitions.add(new TopicPartition(topic, 1));
        }
        return partitions;
    }

    /**
     * Waits until the application committed the end of every partition of its input and
     * repartition topics, so that a broker restart from here replays nothing: at_least_once
     * counts a record twice only if it was processed but not committed.
     */
    private void awaitCommitted(String app, String input) throws Exception {
        List<TopicPartition> partitions = streamsSources(app, input);
        try (Admin admin = admin(new Properties())) {
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            partitions.forEach(tp -> latest.put(tp, OffsetSpec.latest()));
            long deadline = System.nanoTime() + DEADLINE.toNanos();
            while (true) {
                var ends = admin.listOffsets(latest).all().get();
                var committed = admin.listConsumerGroupOffsets(app).partitionsToOffsetAndMetadata().get();
                boolean done = partitions.stream().allMatch(tp -> committed.get(tp) != null
                        && committed.get(tp).offset() == ends.get(tp).offset());
                if (done) {
                    return;
                }
                check(System.nanoTime() < deadline, "committed " + committed + ", ends " + ends);
                Thread.sleep(100);
            }
        }
    }

    private static final String[] WORDS = {
        "the quick brown fox", "jumps over the lazy dog", "the dog sleeps", "a fox runs",
    };

    private static Map<String, Long> expectedCounts(int lines) {
        Map<String, Long> counts = new TreeMap<>();
        for (int i = 0; i < lines; i++) {
            for (String word : WORDS[i % WORDS.length].split(" ")) {
                counts.merge(word, 1L, Long::sum);
            }
        }
        return counts;
    }

    private Properties countsReaderProps() {
        Properties props = common();
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        return props;
    }

    private static void check(boolean condition, String message) {
        if (!condition) {
            throw new IllegalStateException(message);
        }
    }

    /** Renders maps, collections, strings, numbers, booleans and null as JSON. */
    static final class Json {
        static String of(Object value) {
            StringBuilder out = new StringBuilder();
            write(out, value);
            return out.toString();
        }

        private static void write(StringBuilder out, Object value) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof Map<?, ?> map) {
                out.append('{');
                String separator = "";
                for (var entry : map.entrySet()) {
                    out.append(separator);
                    write(out, String.valueOf(entry.getKey()));
                    out.append(':');
                    write(out, entry.getValue());
                    separator = ",";
                }
                out.append('}');
            } else if (value instanceof Collection<?> items) {
                out.append('[');
                String separator = "";
                for (Object item : items) {
                    out.append(separator);
                    write(out, item);
                    separator = ",";
                }
                out.append(']');
            } else if (value instanceof Number || value instanceof Boolean) {
                out.append(value);
            } else {
                out.append('"');
                for (char c : value.toString().toCharArray()) {
                    if (c == '"' || c == '\\') {
                        out.append('\\').append(c);
                    } else if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
                out.append('"');
            }
        }
    }
}
