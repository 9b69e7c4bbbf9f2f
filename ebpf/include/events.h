/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every record the capture programs hand to user space, and the constants they share with it.
 *
 * This header is the single definition of the wire layout between the BPF programs in ebpf/ and
 * the decoder in agent/capture/events.py. Layouts are little-endian, naturally aligned and free
 * of implicit padding (explicit `_pad` fields instead), so that user space can decode them with
 * fixed offsets. tests/capture/test_event_layout.py compiles this header and compares every
 * offset with the decoder; change both together and bump EVENTS_ABI_VERSION.
 *
 * Builds both inside bcc (kernel types) and in a plain C compiler (<linux/types.h>).
 */
#ifndef INFERSIGHT_EVENTS_H
#define INFERSIGHT_EVENTS_H

#define EVENTS_ABI_VERSION 1

/* Largest payload one data record carries; the loader may lower it with -DMAX_PAYLOAD_BYTES. */
#ifndef MAX_PAYLOAD_BYTES
#define MAX_PAYLOAD_BYTES 16384
#endif

#define COMM_LEN 16

/* event_header.kind */
#define EV_DATA 1       /* struct data_event: bytes moved by one call (or a piece of it) */
#define EV_CONN_OPEN 2  /* struct conn_event: a TCP connection was connected or accepted */
#define EV_CONN_CLOSE 3 /* struct event_header: the tracked fd was closed */
#define EV_TLS_BIND 4   /* struct tls_bind_event: an SSL object now maps to a connection */
#define EV_TLS_FREE 5   /* struct event_header: SSL_free on an SSL object that carried data */
#define EV_PROC_EXEC 6  /* struct event_header: a process called exec (rescan its libraries) */
#define EV_PROC_EXIT 7  /* struct event_header: a process with tracked state exited */
#define EV_LIB_OPEN 8   /* struct path_event: a process opened a file named like libssl */

/* event_header.direction */
#define DIR_EGRESS 0  /* the traced process sent these bytes (write, send, SSL_write) */
#define DIR_INGRESS 1 /* the traced process received these bytes (read, recv, SSL_read) */

/* event_header.role and conn_state.role */
#define ROLE_UNKNOWN 0
#define ROLE_CLIENT 1 /* the process called connect() */
#define ROLE_SERVER 2 /* the process accepted the connection */

/* event_header.flags */
#define EVF_TRUNCATED 0x01  /* data_event: cap_bytes < len_bytes, the rest was not copied */
#define EVF_TLS 0x02        /* data came from the OpenSSL probes (plaintext of a TLS stream) */
#define EVF_UNVERIFIED 0x04 /* conn_event: TCP-ness was not proven in the kernel */
#define EVF_SEEDED 0x08     /* conn_event: made by user space for a pre-existing socket */
#define EVF_LOSS 0x10       /* data_event: records of this stream were lost (ring buffer full)
			     * since the stream's previous record that got through */

/* data_event.op: which call produced the bytes */
#define OP_READ 1
#define OP_WRITE 2
#define OP_READV 3
#define OP_WRITEV 4
#define OP_SENDTO 5
#define OP_RECVFROM 6
#define OP_SENDMSG 7
#define OP_RECVMSG 8
#define OP_SSL_WRITE 9
#define OP_SSL_READ 10
#define OP_SSL_WRITE_EX 11
#define OP_SSL_READ_EX 12

/* tls_bind_event.how: how the SSL object was tied to its socket */
#define BIND_SET_FD 1        /* SSL_set_fd(ssl, fd) */
#define BIND_NESTED_CALL 2   /* a socket call made inside SSL_read/SSL_write on the same thread */
#define BIND_THREAD_RECENT 3 /* the thread's ciphertext call right before/after (memory BIOs) */

/* Indexes of the per-CPU counters in the `counters` map (summed by user space). */
#define CNT_RINGBUF_DROPS 0   /* records lost because the ring buffer was full */
#define CNT_TRUNCATED 1       /* data records whose payload was cut at the cap */
#define CNT_CONNS_OPENED 2    /* connections tracked */
#define CNT_CONN_TABLE_FULL 3 /* connections not tracked because the table was full */
#define CNT_TLS_CIPHER 4      /* plaintext-path calls suppressed because they carried TLS */
#define CNT_READ_FAULTS 5     /* payload copies that failed (page not resident, bad pointer) */
#define CNT_MAX 8

struct event_header {
	__u64 mono_ns;   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC at the end of the call */
	__u64 conn_id;   /* 0 when the SSL object is not yet tied to a connection */
	__u64 ssl_ptr;   /* the SSL* for TLS records, 0 otherwise */
	__u64 cgroup_id; /* cgroup v2 id of the calling task */
	__u32 pid;       /* thread group id */
	__u32 tid;
	__s32 fd;        /* -1 when unknown */
	__u8 kind;       /* EV_* */
	__u8 direction;  /* DIR_* */
	__u8 role;       /* ROLE_* */
	__u8 flags;      /* EVF_* */
	char comm[COMM_LEN];
}; /* 64 bytes */

struct data_event {
	struct event_header hdr;
	__u32 len_bytes; /* bytes this record stands for */
	__u32 cap_bytes; /* bytes of payload that follow (<= len_bytes, <= MAX_PAYLOAD_BYTES) */
	__u16 piece;     /* index of this record among the records of one call */
	__u16 op;        /* OP_* */
	__u32 _pad;
	__u8 payload[MAX_PAYLOAD_BYTES];
}; /* 80 bytes + payload; only 80 + cap_bytes are sent */

struct conn_event {
	struct event_header hdr;
	__u16 family;     /* AF_INET, AF_INET6, or 0 when the kernel side could not tell */
	__u16 peer_port;  /* host byte order, 0 unknown */
	__u16 local_port; /* host byte order, 0 unknown */
	__u16 _pad;
	__s32 listen_fd;     /* server: the listening socket it was accepted from; -1 otherwise */
	__u32 _pad2;
	__u8 peer_addr[16];  /* network order; IPv4 in the first 4 bytes */
	__u8 local_addr[16]; /* network order; usually unknown (zero) in the kernel */
}; /* 112 bytes */

struct tls_bind_event {
	struct event_header hdr; /* conn_id, ssl_ptr, fd and role of the binding */
	__u32 how;               /* BIND_* */
	__u32 _pad;
}; /* 72 bytes */

#define PATH_BYTES 256

struct path_event {
	struct event_header hdr;
	char path[PATH_BYTES]; /* NUL-terminated, as the process named it (relative to its root) */
}; /* 320 bytes */

#endif /* INFERSIGHT_EVENTS_H */
