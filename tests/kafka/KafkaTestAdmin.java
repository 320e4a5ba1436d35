// The test harness's hands and eyes on the Apache Kafka test cluster: Kafka's own Java Admin
// client and consumer, driven line by line over stdin/stdout by tests/support/kafka.rs.
//
// One command a line, words separated by spaces; one answer a line: "ok ..." or
// "error <exception>: <message>". Being Kafka's own client, not librdkafka, it is also the
// independent witness the agent's counts are checked against.
//
//   ping
//   create-topic TOPIC PARTITIONS RF [KEY=VALUE ...]
//   delete-topic TOPIC                    (waits until the topic is gone)
//   create-partitions TOPIC TOTAL
//   describe-topic TOPIC                  -> ok PARTITION:LEADER:REPLICAS:ISR ... (leader -1: none)
//   alter-topic TOPIC KEY=VALUE
//   acl-add|acl-remove PRINCIPAL topic|group|cluster literal|prefixed NAME OP[,OP...]
//   scram-set USER MECHANISM PASSWORD | scram-delete USER MECHANISM
//   reassign TOPIC PARTITION B1,B2,...    (waits until the reassignment is done)
//   elect-preferred TOPIC PARTITION
//   cluster                               -> ok CONTROLLER ID:HOST:PORT:RACK ...
//   coordinator GROUP                     -> ok BROKER_ID
//   group GROUP                           -> ok STATE MEMBERS
//   end-offsets TOPIC                     -> ok PARTITION:END ...
//   produce TOPIC PARTITION TEXT          -> ok OFFSET
//   commit GROUP TOPIC PARTITION OFFSET   (an offset commit of a group with no members)
//   delete-records TOPIC PARTITION OFFSET (moves the log start up to OFFSET)
//   witness TOPIC INSTANCE                -> ok RECORDS PARTITION:SEQ[:TRACEPARENT] ... (INSTANCE's
//                                            heartbeats, with their traceparent header if any)
//   errors                                -> ok CODE:NAME ... (the protocol's error codes)
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class KafkaTestAdmin {
    private static final long TIMEOUT_S = 30;
    private final String bootstrap;
    private final Admin admin;
    private final ObjectMapper json = new ObjectMapper();
    private KafkaProducer<String, String> producer;

    private KafkaTestAdmin(String bootstrap) {
        this.bootstrap = bootstrap;
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        this.admin = Admin.create(p);
    }

    public static void main(String[] args) throws Exception {
        KafkaTestAdmin helper = new KafkaTestAdmin(args[0]);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String answer;
            try {
                answer = "ok" + helper.run(line.trim().split(" +"));
            } catch (Throwable e) {
                Throwable root = e;
                while ((root instanceof ExecutionException || root.getCause() != null && root.getMessage() == null)
                        && root.getCause() != null) {
                    root = root.getCause();
                }
                answer = "error " + root.getClass().getSimpleName() + ": "
                        + String.valueOf(root.getMessage()).replace('\n', ' ');
            }
            System.out.println(answer);
            System.out.flush();
        }
        helper.admin.close(Duration.ofSeconds(5));
        if (helper.producer != null) {
            helper.producer.close(Duration.ofSeconds(5));
        }
    }

    private String run(String[] w) throws Exception {
        switch (w[0]) {
            case "errors":
                return Arrays.stream(org.apache.kafka.common.protocol.Errors.values())
                        .map(e -> " " + e.code() + ":" + e.name())
                        .collect(Collectors.joining());
            case "ping":
                return "";
            case "create-topic": {
                NewTopic topic = new NewTopic(w[1], Integer.parseInt(w[2]), Short.parseShort(w[3]));
                Map<String, String> configs = new HashMap<>();
                for (int i = 4; i < w.length; i++) {
                    String[] kv = w[i].split("=", 2);
                    configs.put(kv[0], kv[1]);
                }
                topic.configs(configs);
                admin.createTopics(List.of(topic)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                waitForLeaders(w[1]);
                return "";
            }
            case "delete-topic": {
                admin.deleteTopics(List.of(w[1])).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
                while (admin.listTopics().names().get().contains(w[1])) {
                    if (System.nanoTime() > deadline) {
                        throw new IllegalStateException("topic " + w[1] + " still listed");
                    }
                    Thread.sleep(50);
                }
                return "";
            }
            case "create-partitions":
                admin.createPartitions(Map.of(w[1], NewPartitions.increaseTo(Integer.parseInt(w[2]))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                waitForLeaders(w[1]);
                return "";
            case "describe-topic":
                return describe(w[1]);
            case "alter-topic": {
                String[] kv = w[2].split("=", 2);
                ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, w[1]);
                AlterConfigOp op = new AlterConfigOp(new ConfigEntry(kv[0], kv[1]), AlterConfigOp.OpType.SET);
                admin.incrementalAlterConfigs(Map.of(resource, List.of(op))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                return "";
            }
            case "acl-add":
            case "acl-remove": {
                ResourceType type = ResourceType.fromString(w[2].toUpperCase());
                PatternType pattern = PatternType.fromString(w[3].toUpperCase());
                ResourcePattern resource = new ResourcePattern(type, w[4], pattern);
                List<AclBinding> bindings = new ArrayList<>();
                for (String op : w[5].split(",")) {
                    AccessControlEntry entry = new AccessControlEntry(
                            w[1], "*", AclOperation.fromString(op.toUpperCase()), AclPermissionType.ALLOW);
                    bindings.add(new AclBinding(resource, entry));
                }
                if (w[0].equals("acl-add")) {
                    admin.createAcls(bindings).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                } else {
                    List<AclBindingFilter> filters = bindings.stream().map(AclBinding::toFilter).collect(Collectors.toList());
                    admin.deleteAcls(filters).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                }
                return "";
            }
            case "scram-set": {
                ScramCredentialInfo info = new ScramCredentialInfo(ScramMechanism.fromMechanismName(w[2]), 4096);
                UserScramCredentialAlteration upsert = new UserScramCredentialUpsertion(w[1], info, w[3]);
                admin.alterUserScramCredentials(List.of(upsert)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                return "";
            }
            case "scram-delete": {
                UserScramCredentialAlteration delete =
                        new UserScramCredentialDeletion(w[1], ScramMechanism.fromMechanismName(w[2]));
                admin.alterUserScramCredentials(List.of(delete)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                return "";
            }
            case "reassign": {
                TopicPartition tp = new TopicPartition(w[1], Integer.parseInt(w[2]));
                List<Integer> replicas = Arrays.stream(w[3].split(",")).map(Integer::parseInt).collect(Collectors.toList());
                admin.alterPartitionReassignments(Map.of(tp, Optional.of(new NewPartitionReassignment(replicas))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
                while (!admin.listPartitionReassignments(Set.of(tp)).reassignments().get().isEmpty()) {
                    if (System.nanoTime() > deadline) {
                        throw new IllegalStateException("reassignment of " + tp + " not done");
                    }
                    Thread.sleep(50);
                }
                return "";
            }
            case "elect-preferred": {
                // Elects the partition's preferred (first) replica, and waits until the
                // metadata says it leads: an election can be answered before every broker
                // knows of it, or not be needed yet while the replica catches up.
                TopicPartition tp = new TopicPartition(w[1], Integer.parseInt(w[2]));
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
                while (true) {
                    try {
                        admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).partitions()
                                .get(TIMEOUT_S, TimeUnit.SECONDS).get(tp).ifPresent(e -> {
                                    if (!(e instanceof ElectionNotNeededException)) {
                                        throw new IllegalStateException(e);
                                    }
                                });
                    } catch (ExecutionException e) {
                        if (!(e.getCause() instanceof ElectionNotNeededException)) {
                            throw e;
                        }
                    }
                    TopicPartitionInfo info = topic(w[1]).partitions().get(tp.partition());
                    if (info.leader() != null && info.leader().id() == info.replicas().get(0).id()) {
                        return "";
                    }
                    if (System.nanoTime() > deadline) {
                        throw new IllegalStateException("the preferred replica of " + tp + " does not lead");
                    }
                    Thread.sleep(100);
                }
            }
            case "cluster": {
                DescribeClusterResult cluster = admin.describeCluster();
                StringBuilder out = new StringBuilder(" ").append(cluster.controller().get().id());
                for (Node n : cluster.nodes().get()) {
                    out.append(' ').append(n.id()).append(':').append(n.host()).append(':').append(n.port())
                            .append(':').append(n.rack());
                }
                return out.toString();
            }
            case "coordinator": {
                ConsumerGroupDescription group = admin.describeConsumerGroups(List.of(w[1]))
                        .describedGroups().get(w[1]).get(TIMEOUT_S, TimeUnit.SECONDS);
                return " " + group.coordinator().id();
            }
            case "committed": {
                Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(w[1])
                        .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS);
                return offsets.entrySet().stream()
                        .filter(e -> e.getValue() != null)
                        .map(e -> " " + e.getKey().topic() + ":" + e.getKey().partition() + ":" + e.getValue().offset())
                        .sorted()
                        .collect(Collectors.joining());
            }
            case "group": {
                ConsumerGroupDescription group = admin.describeConsumerGroups(List.of(w[1]))
                        .describedGroups().get(w[1]).get(TIMEOUT_S, TimeUnit.SECONDS);
                return " " + group.groupState() + " " + group.members().size();
            }
            case "end-offsets":
                return endOffsets(w[1]).entrySet().stream()
                        .sorted(Map.Entry.comparingByKey(java.util.Comparator.comparingInt(TopicPartition::partition)))
                        .map(e -> " " + e.getKey().partition() + ":" + e.getValue())
                        .collect(Collectors.joining());
            case "produce": {
                if (producer == null) {
                    Properties p = new Properties();
                    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                    p.put(ProducerConfig.ACKS_CONFIG, "all");
                    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
                    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
                    producer = new KafkaProducer<>(p);
                }
                String text = String.join(" ", Arrays.copyOfRange(w, 3, w.length));
                RecordMetadata sent = producer.send(new ProducerRecord<>(w[1], Integer.parseInt(w[2]), null, text))
                        .get(TIMEOUT_S, TimeUnit.SECONDS);
                return " " + sent.offset();
            }
            case "commit": {
                TopicPartition tp = new TopicPartition(w[2], Integer.parseInt(w[3]));
                admin.alterConsumerGroupOffsets(w[1], Map.of(tp, new OffsetAndMetadata(Long.parseLong(w[4]))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                return "";
            }
            case "delete-records": {
                TopicPartition tp = new TopicPartition(w[1], Integer.parseInt(w[2]));
                admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(Long.parseLong(w[3]))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                return "";
            }
            case "witness":
                return witness(w[1], w[2]);
            default:
                throw new IllegalArgumentException("unknown command " + w[0]);
        }
    }

    private TopicDescription topic(String name) throws Exception {
        return admin.describeTopics(List.of(name)).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS).get(name);
    }

    /** Waits until every partition of a new topic (or new partition) has a leader. */
    private void waitForLeaders(String name) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (true) {
            try {
                if (topic(name).partitions().stream().allMatch(p -> p.leader() != null)) {
                    return;
                }
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof UnknownTopicOrPartitionException)) {
                    throw e;
                }
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("partitions of " + name + " have no leader");
            }
            Thread.sleep(50);
        }
    }

    private String describe(String name) throws Exception {
        StringBuilder out = new StringBuilder();
        for (TopicPartitionInfo p : topic(name).partitions()) {
            out.append(' ').append(p.partition()).append(':')
                    .append(p.leader() == null ? -1 : p.leader().id()).append(':')
                    .append(ids(p.replicas())).append(':').append(ids(p.isr()));
        }
        return out.toString();
    }

    private static String ids(Collection<Node> nodes) {
        return nodes.stream().map(n -> Integer.toString(n.id())).collect(Collectors.joining(","));
    }

    private KafkaConsumer<byte[], byte[]> consumer() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "50");
        return new KafkaConsumer<>(p);
    }

    private Map<TopicPartition, Long> endOffsets(String name) throws Exception {
        List<TopicPartition> partitions = topic(name).partitions().stream()
                .map(p -> new TopicPartition(name, p.partition())).collect(Collectors.toList());
        try (KafkaConsumer<byte[], byte[]> consumer = consumer()) {
            return consumer.endOffsets(partitions, Duration.ofSeconds(TIMEOUT_S));
        }
    }

    /** Every record from the start of each partition to where it ended when the read began. */
    private String witness(String name, String instance) throws Exception {
        Map<TopicPartition, Long> ends = endOffsets(name);
        StringBuilder out = new StringBuilder();
        long records = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = consumer()) {
            consumer.assign(ends.keySet());
            consumer.seekToBeginning(ends.keySet());
            Map<TopicPartition, Long> remaining = new HashMap<>(ends);
            remaining.entrySet().removeIf(e -> consumer.position(e.getKey()) >= e.getValue());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (!remaining.isEmpty()) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("witness did not reach the end of " + remaining);
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    Long end = ends.get(tp);
                    if (end == null || r.offset() >= end) {
                        continue;
                    }
                    records++;
                    if (r.offset() + 1 >= end) {
                        remaining.remove(tp);
                    }
                    JsonNode heartbeat;
                    try {
                        heartbeat = r.value() == null ? null : json.readTree(r.value());
                    } catch (Exception notJson) {
                        continue;
                    }
                    if (heartbeat != null && instance.equals(heartbeat.path("instance").asText(null))
                            && heartbeat.path("seq").isIntegralNumber()) {
                        out.append(' ').append(r.partition()).append(':').append(heartbeat.path("seq").asLong());
                        Header traceparent = r.headers().lastHeader("traceparent");
                        if (traceparent != null) {
                            out.append(':').append(new String(traceparent.value(), StandardCharsets.UTF_8));
                        }
                    }
                }
                for (TopicPartition tp : new ArrayList<>(remaining.keySet())) {
                    if (consumer.position(tp) >= remaining.get(tp)) {
                        remaining.remove(tp);
                    }
                }
            }
        }
        return " " + records + out;
    }
}
