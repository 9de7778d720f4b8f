/*
 * UDP tracker load generator (BEP 15) for bench/tracker.ts; compiled on the fly with gcc (the Node generator
 * udpgen.mjs is the fallback). Closed loop: SOCKETS sockets, each connects once, then keeps CONC/SOCKETS
 * announces in flight; a lost reply is re-sent after 1 s so the concurrency stays fixed.
 *   udpgen HOST PORT SECONDS CONC SOCKETS HASHFILE WARMUP_SECONDS
 * Prints one JSON line: {"requests":..,"rps":..,"p50_ms":..,"p99_ms":..,"timeouts":..,"errors":..}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXS 64
#define MAXSLOT 4096
static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static uint32_t rs = 12345;
static uint32_t rnd(uint32_t n) { rs = rs * 1103515245u + 12345u; return (rs >> 8) % n; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

typedef struct { uint32_t tx; double t; } slot_t;
typedef struct { int fd; int connected; uint8_t cid[8]; slot_t slots[MAXSLOT]; int nslots; double last_connect; } sock_t;

static uint8_t (*hashes)[20];
static int nhash;
static struct sockaddr_in dst;
static uint32_t txseq = 1;

static void put32(uint8_t *b, uint32_t v) { b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v; }
static uint32_t get32(const uint8_t *b) { return (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]; }

static void send_connect(sock_t *s) {
  uint8_t b[16] = {0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0};
  put32(b + 12, 0xffffffffu);
  sendto(s->fd, b, 16, 0, (struct sockaddr *)&dst, sizeof dst);
  s->last_connect = now_ms();
}

static void send_announce(sock_t *s, int i) {
  uint8_t b[98];
  memset(b, 0, sizeof b);
  memcpy(b, s->cid, 8);
  put32(b + 8, 1);
  uint32_t tx = (txseq++ & 0xfffff) | ((uint32_t)i << 20);
  /* tx encodes the slot index in its top 12 bits */
  put32(b + 12, tx);
  memcpy(b + 16, hashes[rnd(nhash)], 20);
  memcpy(b + 36, "-BT0001-", 8);
  put32(b + 44, rnd(1000));
  put32(b + 68, rnd(4) == 0 ? 0 : 1000);
  put32(b + 80, 0);
  put32(b + 92, 50);
  uint32_t port = 1024 + rnd(1000);
  b[96] = port >> 8; b[97] = port & 0xff;
  s->slots[i].tx = tx;
  s->slots[i].t = now_ms();
  sendto(s->fd, b, 98, 0, (struct sockaddr *)&dst, sizeof dst);
}

int main(int argc, char **argv) {
  if (argc < 8) { fprintf(stderr, "usage: udpgen HOST PORT SECONDS CONC SOCKETS HASHFILE WARMUP\n"); return 2; }
  double seconds = atof(argv[3]), warm = atof(argv[7]);
  int conc = atoi(argv[4]), ns = atoi(argv[5]);
  if (ns < 1 || ns > MAXS) ns = 8;
  int per = conc / ns; if (per < 1) per = 1; if (per > MAXSLOT) per = MAXSLOT;
  FILE *f = fopen(argv[6], "r");
  if (!f) { perror("hashfile"); return 1; }
  hashes = malloc(20 * 100000);
  char line[128];
  while (fgets(line, sizeof line, f) && nhash < 100000) {
    if (strlen(line) < 40) continue;
    for (int k = 0; k < 20; k++) { unsigned v; sscanf(line + 2 * k, "%2x", &v); hashes[nhash][k] = v; }
    nhash++;
  }
  fclose(f);
  memset(&dst, 0, sizeof dst);
  dst.sin_family = AF_INET; dst.sin_port = htons(atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &dst.sin_addr);
  static sock_t socks[MAXS];
  struct pollfd pfd[MAXS];
  for (int i = 0; i < ns; i++) {
    socks[i].fd = socket(AF_INET, SOCK_DGRAM, 0);
    fcntl(socks[i].fd, F_SETFL, O_NONBLOCK);
    int sz = 1 << 20; setsockopt(socks[i].fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    struct sockaddr_in me = {0}; me.sin_family = AF_INET; inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    bind(socks[i].fd, (struct sockaddr *)&me, sizeof me);
    socks[i].nslots = per;
    pfd[i].fd = socks[i].fd; pfd[i].events = POLLIN;
    send_connect(&socks[i]);
  }
  size_t cap = 1 << 24, nlat = 0;
  double *lat = malloc(sizeof(double) * cap);
  long done = 0, timeouts = 0, errors = 0;
  double t0 = now_ms(), mstart = t0 + warm * 1000, mend = mstart + seconds * 1000, lastscan = t0;
  uint8_t buf[2048];
  for (;;) {
    double t = now_ms();
    if (t >= mend) break;
    int measuring = t >= mstart;
    poll(pfd, ns, 50);
    for (int i = 0; i < ns; i++) {
      sock_t *s = &socks[i];
      for (;;) {
        ssize_t n = recv(s->fd, buf, sizeof buf, 0);
        if (n < 0) break;
        if (n < 8) continue;
        uint32_t action = get32(buf), tx = get32(buf + 4);
        if (action == 0 && n >= 16) {
          if (!s->connected) { memcpy(s->cid, buf + 8, 8); s->connected = 1; for (int k = 0; k < s->nslots; k++) send_announce(s, k); }
          continue;
        }
        int k = tx >> 20;
        if (k >= s->nslots || s->slots[k].tx != tx) continue;
        double tn = now_ms();
        if (tn >= mstart && tn < mend) {
          done++;
          if (nlat < cap) lat[nlat++] = tn - s->slots[k].t;
          if (action != 1) errors++;
        }
        send_announce(s, k);
      }
    }
    t = now_ms();
    if (t - lastscan > 100) {
      lastscan = t;
      for (int i = 0; i < ns; i++) {
        sock_t *s = &socks[i];
        if (!s->connected) { if (t - s->last_connect > 300) send_connect(s); continue; }
        for (int k = 0; k < s->nslots; k++) if (t - s->slots[k].t > 1000) { if (measuring) timeouts++; send_announce(s, k); }
      }
    }
  }
  qsort(lat, nlat, sizeof(double), cmpd);
  double p50 = nlat ? lat[(size_t)(nlat * 0.5)] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
  printf("{\"requests\":%ld,\"rps\":%ld,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"timeouts\":%ld,\"errors\":%ld}\n", done,
         (long)(done / seconds), p50, p99, timeouts, errors);
  return 0;
}
