package io.sluice.reftest;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.connect.mirror.RemoteClusterUtils;

/**
 * The Java client's side of sluice/tests/mirror.rs (MirrorMaker 2 between two Sluice clusters):
 * one step per run, its result on stdout, one fact a line.
 *
 * <pre>
 *   produce BOOTSTRAP TOPIC FIRST COUNT   records key "k&lt;i&gt;" value "v&lt;i&gt;" for i in
 *                                         FIRST..FIRST+COUNT (idempotent, acks=all);
 *                                         prints PRODUCED COUNT
 *   consume BOOTSTRAP TOPIC GROUP COUNT   a group member that reads COUNT records, commits its
 *                                         positions synchronously and leaves;
 *                                         prints COMMITTED PARTITION OFFSET per partition
 *   offsets BOOTSTRAP GROUP               the group's committed offsets (Admin);
 *                                         prints OFFSET TOPIC PARTITION OFFSET per partition
 *   read BOOTSTRAP TOPIC                  every record of every partition, from the start to
 *                                         the end offsets it found first; prints
 *                                         PARTITION P END E READ N, then RECORDS TOTAL DISTINCT
 *                                         MIN MAX BAD (values that do not match their key)
 *   translate BOOTSTRAP ALIAS GROUP       MirrorMaker 2's checkpoints of GROUP from the cluster
 *                                         ALIAS, read from this (the target) cluster by
 *                                         RemoteClusterUtils.translateOffsets; prints
 *                                         CHECKPOINT TOPIC PARTITION OFFSET per partition
 * </pre>
 */
public final class MirrorCheck {
  private static final Duration STEP = Duration.ofSeconds(60);

  public static void main(String[] args) throws Exception {
    switch (args[0]) {
      case "produce" -> produce(args[1], args[2], Long.parseLong(args[3]), Long.parseLong(args[4]));
      case "consume" -> consume(args[1], args[2], args[3], Long.parseLong(args[4]));
      case "offsets" -> offsets(args[1], args[2]);
      case "read" -> read(args[1], args[2]);
      case "translate" -> translate(args[1], args[2], args[3]);
      default -> throw new IllegalArgumentException("unknown step " + args[0]);
    }
  }

  private static void produce(String bootstrap, String topic, long first, long count)
      throws Exception {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
    try (KafkaProducer<String, String> producer =
        new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
      List<java.util.concurrent.Future<?>> sent = new ArrayList<>();
      for (long i = first; i < first + count; i++) {
        sent.add(producer.send(new ProducerRecord<>(topic, "k" + i, "v" + i)));
      }
      producer.flush();
      for (var f : sent) {
        f.get();
      }
    }
    System.out.println("PRODUCED " + count);
  }

  private static void consume(String bootstrap, String topic, String group, long count) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    try (KafkaConsumer<String, String> consumer =
        new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
      consumer.subscribe(List.of(topic));
      long read = 0;
      long deadline = System.nanoTime() + STEP.toNanos();
      while (read < count) {
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException("read " + read + " of " + count + " records");
        }
        read += consumer.poll(Duration.ofMillis(200)).count();
      }
      Map<TopicPartition, OffsetAndMetadata> positions = new HashMap<>();
      for (TopicPartition tp : consumer.assignment()) {
        positions.put(tp, new OffsetAndMetadata(consumer.position(tp)));
      }
      consumer.commitSync(positions);
      for (var e : new TreeMap<>(byPartition(positions)).entrySet()) {
        System.out.println("COMMITTED " + e.getKey() + " " + e.getValue());
      }
      System.out.println("CONSUMED " + read);
    }
  }

  private static Map<Integer, Long> byPartition(Map<TopicPartition, OffsetAndMetadata> offsets) {
    Map<Integer, Long> out = new HashMap<>();
    offsets.forEach((tp, om) -> out.put(tp.partition(), om.offset()));
    return out;
  }

  private static void offsets(String bootstrap, String group) throws Exception {
    try (Admin admin = Admin.create(adminProps(bootstrap))) {
      Map<TopicPartition, OffsetAndMetadata> offsets =
          admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
      List<String> lines = new ArrayList<>();
      offsets.forEach(
          (tp, om) ->
              lines.add("OFFSET " + tp.topic() + " " + tp.partition() + " " + om.offset()));
      lines.sort(null);
      lines.forEach(System.out::println);
      System.out.println("GROUP " + group + " " + lines.size());
    }
  }

  private static void read(String bootstrap, String topic) throws Exception {
    Map<TopicPartition, Long> ends = new TreeMap<>((a, b) -> a.partition() - b.partition());
    try (Admin admin = Admin.create(adminProps(bootstrap))) {
      var description = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
      Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
      description
          .partitions()
          .forEach(p -> latest.put(new TopicPartition(topic, p.partition()), OffsetSpec.latest()));
      admin.listOffsets(latest).all().get().forEach((tp, info) -> ends.put(tp, info.offset()));
    }
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    long total = 0;
    long bad = 0;
    TreeSet<Long> distinct = new TreeSet<>();
    try (KafkaConsumer<String, String> consumer =
        new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
      consumer.assign(ends.keySet());
      consumer.seekToBeginning(ends.keySet());
      Map<Integer, Long> readPer = new TreeMap<>();
      long deadline = System.nanoTime() + STEP.toNanos();
      while (ends.entrySet().stream().anyMatch(e -> consumer.position(e.getKey()) < e.getValue())) {
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException("read " + total + " records, not to the end " + ends);
        }
        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
          TopicPartition tp = new TopicPartition(r.topic(), r.partition());
          if (r.offset() >= ends.get(tp)) {
            continue;
          }
          total++;
          readPer.merge(r.partition(), 1L, Long::sum);
          long i = Long.parseLong(r.key().substring(1));
          if (!r.value().equals("v" + i)) {
            bad++;
          }
          distinct.add(i);
        }
      }
      for (var e : ends.entrySet()) {
        int partition = e.getKey().partition();
        System.out.println(
            "PARTITION "
                + partition
                + " END "
                + e.getValue()
                + " READ "
                + readPer.getOrDefault(partition, 0L));
      }
    }
    System.out.println(
        "RECORDS "
            + total
            + " "
            + distinct.size()
            + " "
            + (distinct.isEmpty() ? -1 : distinct.first())
            + " "
            + (distinct.isEmpty() ? -1 : distinct.last())
            + " "
            + bad);
  }

  private static void translate(String bootstrap, String alias, String group) throws Exception {
    Map<String, Object> props = Map.of("bootstrap.servers", bootstrap);
    Map<TopicPartition, OffsetAndMetadata> offsets =
        RemoteClusterUtils.translateOffsets(props, alias, group, STEP);
    List<String> lines = new ArrayList<>();
    offsets.forEach(
        (tp, om) ->
            lines.add("CHECKPOINT " + tp.topic() + " " + tp.partition() + " " + om.offset()));
    lines.sort(null);
    lines.forEach(System.out::println);
    System.out.println("GROUP " + group + " " + lines.size());
  }

  private static Properties adminProps(String bootstrap) {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    return p;
  }
}
