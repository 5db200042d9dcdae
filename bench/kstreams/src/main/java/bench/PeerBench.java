package bench;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.kstream.WindowedSerdes;

/**
 * The Kafka Streams side of bench/peers_bench.py: one of four topologies, one stream thread,
 * exactly_once_v2, commit.interval.ms=100, everything else at Kafka Streams' defaults (the
 * record cache included). Runs until SIGTERM.
 *
 * <p>Output formats, read by the bench's outside consumer:
 *
 * <ul>
 *   <li>count: key = the String key, value = the count as an 8-byte big-endian long;
 *   <li>hopping: key = TimeWindowedSerde (key bytes, then the window start as an 8-byte
 *       big-endian long), value = 8-byte long;
 *   <li>joins: key = the String key, value = {"l":LEFT,"r":RIGHT} (String concatenation).
 * </ul>
 *
 * <p>Usage: PeerBench BOOTSTRAP APP_ID STATE_DIR ROW OUT IN [IN2] [GRACE_MS]
 */
public final class PeerBench {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String appId = args[1];
    String stateDir = args[2];
    String row = args[3];
    String out = args[4];
    String in = args[5];

    Serde<String> str = Serdes.String();
    StreamsBuilder builder = new StreamsBuilder();
    KStream<String, String> stream = builder.stream(in, Consumed.with(str, str));
    switch (row) {
      case "count" -> stream
          .groupByKey()
          .count(Materialized.as("counts"))
          .toStream()
          .to(out, Produced.with(str, Serdes.Long()));
      case "hopping" -> {
        Duration size = Duration.ofMinutes(5);
        Serde<Windowed<String>> windowed =
            WindowedSerdes.timeWindowedSerdeFrom(String.class, size.toMillis());
        stream
            .groupByKey()
            .windowedBy(TimeWindows.ofSizeWithNoGrace(size).advanceBy(Duration.ofMinutes(1)))
            .count(Materialized.as("hopping-counts"))
            .toStream()
            .to(out, Produced.with(windowed, Serdes.Long()));
      }
      case "table-join" -> {
        KTable<String, String> table = builder.table(args[6], Consumed.with(str, str));
        stream
            .join(table, (l, r) -> "{\"l\":" + l + ",\"r\":" + r + "}")
            .to(out, Produced.with(str, str));
      }
      case "stream-join" -> {
        KStream<String, String> right = builder.stream(args[6], Consumed.with(str, str));
        long graceMs = Long.parseLong(args[7]);
        stream
            .join(
                right,
                (l, r) -> "{\"l\":" + l + ",\"r\":" + r + "}",
                JoinWindows.ofTimeDifferenceAndGrace(
                    Duration.ofSeconds(1), Duration.ofMillis(graceMs)),
                StreamJoined.with(str, str, str))
            .to(out, Produced.with(str, str));
      }
      default -> throw new IllegalArgumentException("unknown row " + row);
    }

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
    props.put("auto.offset.reset", "earliest");

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(20));
                  done.countDown();
                }));
    streams.setUncaughtExceptionHandler(
        e -> {
          e.printStackTrace();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
              .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.start();
    System.err.println("kstreams started");
    done.await();
  }
}
