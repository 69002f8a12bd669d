/*
 * Publishes to a NATS JetStream stream with IN_FLIGHT publishes awaiting their acks at once,
 * for SECONDS; prints one JSON line: acks/s and latency percentiles (ms). Written against the
 * C client (Debian's libnats-dev) so that the client does not bound JetStream's row, as one
 * Python process did.
 *
 *     jetstream_pub SERVERS SUBJECT IN_FLIGHT SECONDS PAYLOAD_BYTES
 *
 * Each payload begins with the time it was sent (8 bytes), which the ack handler reads back.
 * Used by bench/cluster-vs-jetstream, which compiles it.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t *latencies;
static size_t acks, capacity;
static long long errors;

/* Counts an ack that came `latency` ns after its publish, or an error. */
static void record(int ok, int64_t latency) {
    pthread_mutex_lock(&lock);
    if (!ok) {
        errors++;
    } else {
        if (acks == capacity) {
            capacity = capacity ? capacity * 2 : 1 << 16;
            latencies = realloc(latencies, capacity * sizeof *latencies);
            if (latencies == NULL) abort();
        }
        latencies[acks++] = latency;
    }
    pthread_mutex_unlock(&lock);
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js, (void)pae, (void)closure;
    int64_t now = nats_NowInNanoSeconds(), sent;
    memcpy(&sent, natsMsg_GetData(msg), sizeof sent);
    record(pa != NULL, now - sent);
    natsMsg_Destroy(msg);
}

static int by_value(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_ms(double p) {
    if (acks == 0) return 0;
    size_t i = (size_t)(p * (double)acks);
    return (double)latencies[i < acks ? i : acks - 1] / 1e6;
}

static int fail(const char *what, natsStatus s) {
    fprintf(stderr, "jetstream_pub: %s: %s\n", what, natsStatus_GetText(s));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s SERVERS SUBJECT IN_FLIGHT SECONDS PAYLOAD_BYTES\n", argv[0]);
        return 2;
    }
    const char *servers = argv[1], *subject = argv[2];
    int in_flight = atoi(argv[3]), size = atoi(argv[5]);
    double seconds = atof(argv[4]);
    if (in_flight < 1 || seconds <= 0 || size < 8) {
        fprintf(stderr, "jetstream_pub: IN_FLIGHT >= 1, SECONDS > 0, PAYLOAD_BYTES >= 8\n");
        return 2;
    }
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions options;
    natsStatus s = natsConnection_ConnectTo(&nc, servers);
    if (s != NATS_OK) return fail("connect", s);
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = in_flight;
    options.PublishAsync.AckHandler = on_ack;
    options.PublishAsync.StallWait = 10000;
    s = natsConnection_JetStream(&js, nc, &options);
    if (s != NATS_OK) return fail("jetstream", s);
    char *payload = malloc((size_t)size);
    if (payload == NULL) abort();
    memset(payload, 'x', (size_t)size);
    int64_t started = nats_NowInNanoSeconds();
    int64_t deadline = started + (int64_t)(seconds * 1e9);
    while (nats_NowInNanoSeconds() < deadline) {
        int64_t now = nats_NowInNanoSeconds();
        memcpy(payload, &now, sizeof now); /* the message copies the payload */
        if (in_flight == 1) {
            /* One at a time is a plain publish: the asynchronous one, held at one pending,
               waits for its ack by polling, which would add milliseconds. */
            jsPubAck *ack = NULL;
            s = js_Publish(&ack, js, subject, payload, size, NULL, NULL);
            if (s != NATS_OK) return fail("publish", s);
            jsPubAck_Destroy(ack);
            record(1, nats_NowInNanoSeconds() - now);
            continue;
        }
        s = js_PublishAsync(js, subject, payload, size, NULL);
        if (s != NATS_OK && s != NATS_TIMEOUT) return fail("publish", s);
    }
    jsPubOptions complete;
    jsPubOptions_Init(&complete);
    complete.MaxWait = 30000;
    s = js_PublishAsyncComplete(js, &complete);
    if (s != NATS_OK) return fail("waiting for the last acks", s);
    double elapsed = (double)(nats_NowInNanoSeconds() - started) / 1e9;
    pthread_mutex_lock(&lock);
    qsort(latencies, acks, sizeof *latencies, by_value);
    printf("{\"acks\": %zu, \"acks_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"errors\": %lld}\n",
           acks, (double)acks / elapsed, percentile_ms(0.5), percentile_ms(0.99), errors);
    pthread_mutex_unlock(&lock);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(payload);
    free(latencies);
    nats_Close();
    return 0;
}
