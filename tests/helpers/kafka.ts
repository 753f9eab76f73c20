/**
 * Topics for tests: created, then waited for until every partition has a leader. kafkajs's
 * `waitForLeaders` gives up with UNKNOWN_TOPIC_OR_PARTITION ("This server does not host this
 * topic-partition") when the broker's metadata lags the creation by a moment.
 */
import type { Admin, ITopicConfig } from 'kafkajs';

const TRANSIENT = /does not host this topic-partition|leader|not available|UNKNOWN_TOPIC_OR_PARTITION/i;

export async function createTopicsReady(admin: Admin, topics: ITopicConfig[], timeoutMs = 30_000): Promise<void> {
  await admin.createTopics({ waitForLeaders: false, topics });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const md = await admin.fetchTopicMetadata({ topics: topics.map((t) => t.topic) });
      const ready = topics.every((t) => {
        const m = md.topics.find((x) => x.name === t.topic);
        return m !== undefined && m.partitions.length >= (t.numPartitions ?? 1) && m.partitions.every((p) => p.leader >= 0);
      });
      if (ready) return;
    } catch (err) {
      if (!TRANSIENT.test(String((err as Error).message))) throw err;
    }
    if (Date.now() > deadline) throw new Error(`topics ${topics.map((t) => t.topic).join(', ')} have no leaders after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
