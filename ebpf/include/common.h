/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Maps and helpers shared by the probe families (syscalls.c, tls.c, process.c).
 *
 * The loader (agent/capture/bpf_loader.py) pastes this file's text, then the enabled family
 * files, into one bcc program, so every family sees the same maps. It is pasted rather than
 * #included because bcc rewrites map method calls (`conns.lookup(...)`) only in the main source
 * text. Sizes come from -D flags set by the loader; the defaults below are only for reading the
 * code.
 *
 * Sockets are tracked by (tgid, fd) from connect()/accept() exits, because this kernel has no
 * kprobes and the headers bcc compiles against may not match the running kernel: everything
 * here reads tracepoint arguments, uprobe registers and user memory only, never kernel structs.
 */
#include <uapi/linux/ptrace.h>
#include "events.h"

#ifndef MAX_PIECES
#define MAX_PIECES 8 /* data records per call at most; the rest is reported as a gap */
#endif
#ifndef MAX_IOV
#define MAX_IOV 16 /* iovec entries looked at per readv/writev/sendmsg/recvmsg */
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 2048 /* 8 MiB with 4 KiB pages; must be a power of two */
#endif
#ifndef NCPU
#define NCPU 256 /* possible CPUs: one payload scratch slot each */
#endif
#ifndef CONN_TABLE_SIZE
#define CONN_TABLE_SIZE 65536
#endif

#define X_AF_INET 2
#define X_AF_INET6 10
#define X_SOCK_STREAM 1
#define X_EINPROGRESS 115

/* Set by user space (index 0). All zero until then, so nothing is captured before the filters
 * are in place (the tracepoints attach as soon as the program loads). */
struct capture_config {
	__u32 enabled;        /* 1 once user space has written the whole configuration */
	__u32 self_pid;       /* never trace the agent itself */
	__u32 filter_pids;    /* 1: only thread groups in filter_pid_set */
	__u32 filter_cgroups; /* 1: only tasks whose cgroup id is in filter_cgroup_set */
	__u32 filter_ports;   /* 1: only connections whose service port is in filter_port_set */
	__u32 _pad;
	__u64 bind_window_ns; /* how close a ciphertext call must be to an SSL call to pair them */
};

BPF_ARRAY(capture_cfg, struct capture_config, 1);
BPF_HASH(filter_pid_set, __u32, __u8, 4096);
BPF_HASH(filter_cgroup_set, __u64, __u8, 4096);
BPF_HASH(filter_port_set, __u16, __u8, 1024);
BPF_PERCPU_ARRAY(counters, __u64, CNT_MAX);
BPF_ARRAY(id_seq, __u64, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* Payload assembly area, one slot per CPU: a data record is far larger than the 512-byte stack.
 * Tracepoint and uprobe programs cannot migrate CPUs while they run, so a slot is never shared. */
BPF_ARRAY(scratch, struct data_event, NCPU);

struct conn_state {
	__u64 conn_id;
	__u64 bytes_seen; /* plaintext-path bytes so far (the TLS sniff looks at the first call) */
	__u16 family;
	__u16 peer_port;
	__u8 role;
	__u8 cipher; /* 1: this socket carries TLS records; its plaintext-path data is suppressed */
	__u8 _pad[2];
};
/* (tgid << 32 | fd) -> connection. LRU so that sockets of processes that exit without close()
 * cannot fill the table forever. */
BPF_TABLE("lru_hash", __u64, struct conn_state, conns, CONN_TABLE_SIZE);

/* Thread groups that own tracked state, so that their exit is reported (and only theirs). */
BPF_TABLE("lru_hash", __u32, __u8, tracked_pids, 16384);

/* The OpenSSL data calls in progress on a thread (key: pid_tgid), innermost last. They nest:
 * Node.js runs JavaScript from inside SSL_read (a handshake callback) that calls SSL_write. */
#define SSL_STACK_DEPTH 4
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 out_len_ptr; /* size_t* of the _ex variants, 0 for SSL_read/SSL_write */
	__u16 op;
	__u16 _pad[3];
};
struct ssl_stack {
	struct ssl_call frames[SSL_STACK_DEPTH];
	__u32 depth;    /* frames in use */
	__u32 overflow; /* calls nested deeper than SSL_STACK_DEPTH (not reported) */
};
BPF_TABLE("lru_hash", __u64, struct ssl_stack, ssl_calls, 16384);

/* The innermost SSL call in progress on this thread, if any. */
static __always_inline struct ssl_call *current_ssl_call(__u64 id)
{
	struct ssl_stack *st = ssl_calls.lookup(&id);
	if (!st || st->depth == 0 || st->overflow)
		return 0;
	__u32 top = st->depth - 1;
	if (top >= SSL_STACK_DEPTH)
		return 0;
	return &st->frames[top];
}

struct ssl_key {
	__u64 ssl;
	__u32 pid;
	__u32 _pad;
};
struct ssl_binding {
	__u64 conn_id; /* 0 while unbound */
	__s32 fd;
	__u8 role;
	__u8 bound;
	__u8 ignored; /* bound to a socket the filters exclude */
	__u8 _pad;
};
BPF_TABLE("lru_hash", struct ssl_key, struct ssl_binding, ssl_state, 65536);

/* Per thread: the last ciphertext read and an SSL object whose write is waiting for its
 * ciphertext write. Runtimes that give OpenSSL memory BIOs (Node.js, Python asyncio) move the
 * ciphertext themselves, right before SSL_read and right after SSL_write, on the same thread. */
struct thread_tls {
	__u64 read_conn_id;
	__u64 read_mono_ns;
	__u64 write_ssl;
	__u64 write_mono_ns;
	__s32 read_fd;
	__u8 read_role;
	__u8 _pad[3];
};
BPF_TABLE("lru_hash", __u64, struct thread_tls, thread_tls_state, 16384);

struct user_iovec {
	__u64 base;
	__u64 len;
};

static __always_inline __u64 fd_key(__u32 tgid, __s32 fd)
{
	return ((__u64)tgid << 32) | (__u32)fd;
}

static __always_inline void bump(__u32 idx)
{
	__u64 *v = counters.lookup(&idx);
	if (v)
		*v += 1;
}

static __always_inline struct capture_config *get_config(void)
{
	__u32 zero = 0;
	return capture_cfg.lookup(&zero);
}

static __always_inline __u64 next_conn_id(void)
{
	__u32 zero = 0;
	__u64 *seq = id_seq.lookup(&zero);
	if (!seq)
		return 0;
	return __sync_fetch_and_add(seq, 1) + 1;
}

/* Whether the calling task is one we capture (pid and cgroup filters; never the agent). */
static __always_inline int task_allowed(__u32 tgid)
{
	struct capture_config *c = get_config();
	if (!c || !c->enabled)
		return 0;
	if (tgid == c->self_pid)
		return 0;
	if (c->filter_pids && !filter_pid_set.lookup(&tgid))
		return 0;
	if (c->filter_cgroups) {
		__u64 cg = bpf_get_current_cgroup_id();
		if (!filter_cgroup_set.lookup(&cg))
			return 0;
	}
	return 1;
}

/* Port 0 means "not known here": user space resolves and decides. */
static __always_inline int port_allowed(__u16 port)
{
	struct capture_config *c = get_config();
	if (!c || !c->filter_ports || port == 0)
		return 1;
	return filter_port_set.lookup(&port) != 0;
}

static __always_inline int port_filter_on(void)
{
	struct capture_config *c = get_config();
	return c && c->filter_ports;
}

static __always_inline void fill_header(struct event_header *h, __u8 kind, __u64 conn_id,
					__u64 ssl, __s32 fd, __u8 dir, __u8 role, __u8 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	h->mono_ns = bpf_ktime_get_ns();
	h->conn_id = conn_id;
	h->ssl_ptr = ssl;
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->pid = id >> 32;
	h->tid = (__u32)id;
	h->fd = fd;
	h->kind = kind;
	h->direction = dir;
	h->role = role;
	h->flags = flags;
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline void emit_simple(__u8 kind, __u64 conn_id, __u64 ssl, __s32 fd, __u8 role)
{
	struct event_header *h = events.ringbuf_reserve(sizeof(struct event_header));
	if (!h) {
		bump(CNT_RINGBUF_DROPS);
		return;
	}
	fill_header(h, kind, conn_id, ssl, fd, 0, role, 0);
	events.ringbuf_submit(h, 0);
}

static __always_inline void mark_pid_tracked(__u32 tgid)
{
	__u8 one = 1;
	tracked_pids.update(&tgid, &one);
}

/* Where emit_data is in the bytes of one call. It lives in map memory, not in registers, so
 * that the verifier sees unknown (but clamped) values at every loop iteration and can prune:
 * with the offsets in registers it would walk each iteration's exact values separately. */
struct copy_state {
	__u64 base;   /* flat buffer, or the iovec array */
	__u64 iovcnt; /* 0: flat buffer */
	__u64 seg_base;
	__u64 seg_len;
	__u64 seg_off;
	__u64 remaining;
	__u64 iov_idx;
	__u64 drops;
	__u64 faults;
};
BPF_ARRAY(copy_states, struct copy_state, NCPU);

/* Streams that lost data records because the ring buffer was full: their next record that gets
 * through carries EVF_LOSS, so that user space stops pairing across the hole. A plaintext
 * stream is its connection; a TLS stream is (process, SSL object), whose connection may be
 * learnt later. */
struct stream_key {
	__u64 conn_id; /* 0 for TLS */
	__u64 ssl;
	__u32 pid; /* TLS only */
	__u32 _pad;
};
BPF_TABLE("lru_hash", struct stream_key, __u8, lost_streams, 16384);

/*
 * Copies `total` bytes that a call moved, from a flat buffer (iovcnt == 0) or an iovec array,
 * into data records of at most MAX_PAYLOAD_BYTES each, and hands them to the ring buffer.
 * Past MAX_PIECES records the remainder is reported as one record with no payload (a gap), so
 * user space always knows how many bytes went by.
 */
static __always_inline void emit_data(__u64 conn_id, __u64 ssl, __s32 fd, __u8 dir, __u8 role,
				      __u8 flags, __u16 op, __u64 base, __u64 iovcnt, __u64 total)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct data_event *e = scratch.lookup(&cpu);
	volatile struct copy_state *st = copy_states.lookup(&cpu);
	if (!e || !st)
		return;
	fill_header(&e->hdr, EV_DATA, conn_id, ssl, fd, dir, role, flags);
	e->op = op;
	e->_pad = 0;
	struct stream_key sk = {};
	if (flags & EVF_TLS) {
		sk.ssl = ssl;
		sk.pid = bpf_get_current_pid_tgid() >> 32;
	} else {
		sk.conn_id = conn_id;
	}
	__u8 lost_before = lost_streams.lookup(&sk) ? EVF_LOSS : 0;

	st->base = base;
	st->iovcnt = iovcnt;
	st->seg_base = base;
	st->seg_len = total;
	st->seg_off = 0;
	st->remaining = total;
	st->iov_idx = 0;
	st->drops = 0;
	st->faults = 0;
	if (iovcnt > 0) {
		struct user_iovec v = {};
		bpf_probe_read_user(&v, sizeof(v), (void *)base); /* zeroed on failure */
		st->seg_base = v.base;
		st->seg_len = v.len;
	}
	const __u32 hdr_size = sizeof(struct data_event) - MAX_PAYLOAD_BYTES;
	__u32 piece = 0;

	for (int i = 0; i < MAX_PIECES + MAX_IOV; i++) {
		if (st->remaining == 0 || piece >= MAX_PIECES)
			break;
		if (st->seg_off >= st->seg_len) {
			__u64 next = st->iov_idx + 1;
			if (st->iovcnt == 0 || next >= st->iovcnt || next >= MAX_IOV)
				break;
			struct user_iovec v = {};
			bpf_probe_read_user(&v, sizeof(v),
					    (void *)(st->base + next * sizeof(struct user_iovec)));
			st->iov_idx = next;
			st->seg_base = v.base;
			st->seg_len = v.len;
			st->seg_off = 0;
			continue;
		}
		__u64 n = st->seg_len - st->seg_off;
		if (n > st->remaining)
			n = st->remaining;
		if (n > MAX_PAYLOAD_BYTES)
			n = MAX_PAYLOAD_BYTES;
		e->len_bytes = (__u32)n;
		e->cap_bytes = (__u32)n;
		e->piece = (__u16)piece;
		/* The helper zero-fills on a fault: the record keeps its length, flagged. */
		long err = bpf_probe_read_user(e->payload, n, (void *)(st->seg_base + st->seg_off));
		e->hdr.flags = (err ? (flags | EVF_TRUNCATED) : flags) | (piece == 0 ? lost_before : 0);
		if (err)
			st->faults += 1;
		if (events.ringbuf_output(e, hdr_size + n, 0) != 0)
			st->drops += 1;
		st->seg_off += n;
		st->remaining -= n;
		piece++;
	}
	if (st->remaining > 0) {
		__u64 rest = st->remaining;
		e->len_bytes = rest > 0xffffffffULL ? 0xffffffffU : (__u32)rest;
		e->cap_bytes = 0;
		e->piece = (__u16)piece;
		e->hdr.flags = flags | EVF_TRUNCATED | (piece == 0 ? lost_before : 0);
		bump(CNT_TRUNCATED);
		if (events.ringbuf_output(e, hdr_size, 0) != 0)
			st->drops += 1;
	}
	if (st->drops) {
		__u32 idx = CNT_RINGBUF_DROPS;
		__u64 *v = counters.lookup(&idx);
		if (v)
			*v += st->drops;
		__u8 one = 1;
		lost_streams.update(&sk, &one);
	} else if (lost_before) {
		lost_streams.delete(&sk);
	}
	if (st->faults) {
		__u32 idx = CNT_READ_FAULTS;
		__u64 *v = counters.lookup(&idx);
		if (v)
			*v += st->faults;
	}
}

/* Ties an SSL object to a tracked connection and tells user space, once per change. */
static __always_inline void bind_ssl(__u32 tgid, __u64 ssl, struct conn_state *c, __s32 fd,
				     __u32 how)
{
	struct ssl_key k = {.ssl = ssl, .pid = tgid};
	struct ssl_binding *b = ssl_state.lookup(&k);
	if (b && b->bound && (b->conn_id == c->conn_id || how != BIND_SET_FD))
		return; /* only SSL_set_fd moves an SSL object that is already tied */
	struct ssl_binding nb = {.conn_id = c->conn_id, .fd = fd, .role = c->role, .bound = 1};
	ssl_state.update(&k, &nb);
	mark_pid_tracked(tgid);
	struct tls_bind_event *ev = events.ringbuf_reserve(sizeof(struct tls_bind_event));
	if (!ev) {
		bump(CNT_RINGBUF_DROPS);
		return;
	}
	fill_header(&ev->hdr, EV_TLS_BIND, c->conn_id, ssl, fd, 0, c->role, EVF_TLS);
	ev->how = how;
	ev->_pad = 0;
	events.ringbuf_submit(ev, 0);
}

/* An SSL object used on a socket the filters exclude: its plaintext is not reported. */
static __always_inline void ignore_ssl(__u32 tgid, __u64 ssl)
{
	struct ssl_key k = {.ssl = ssl, .pid = tgid};
	struct ssl_binding nb = {.fd = -1, .ignored = 1};
	ssl_state.update(&k, &nb);
}
