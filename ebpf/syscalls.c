/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plaintext capture from syscall tracepoints.
 *
 * socket()/bind() remember each IPv4/IPv6 socket's type and bound port; connect() and
 * accept()/accept4() exits start tracking (tgid, fd) as a client or server connection and
 * report its peer; read/write/readv/writev/sendto/recvfrom/sendmsg/recvmsg exits on tracked fds
 * copy the bytes moved; close() ends tracking. Sockets whose first bytes are TLS records are
 * marked `cipher`: their bytes are left to the OpenSSL probes (tls.c), and the calls are only
 * used to learn which socket an SSL object writes to.
 *
 * Pasted after common.h by the loader; reads tracepoint arguments and user memory only.
 */

struct sock_info {
	__u16 family;
	__u16 type; /* SOCK_STREAM, SOCK_DGRAM...; 0 when only bind() was seen */
	__u16 bound_port;
	__u16 _pad;
};
BPF_TABLE("lru_hash", __u64, struct sock_info, socks, CONN_TABLE_SIZE);

/* pending_call.op for the calls that carry no data (data calls use OP_* from events.h). */
#define PC_SOCKET 101
#define PC_BIND 102
#define PC_CONNECT 103
#define PC_ACCEPT 104

/* Arguments of a syscall in progress, by pid_tgid (a thread is in one syscall at a time). */
struct pending_call {
	__u64 a; /* buffer, iovec array or sockaddr pointer */
	__u64 b; /* iovec count, or the socket() type */
	__s32 fd;
	__u16 op;
	__u16 _pad;
};
BPF_TABLE("lru_hash", __u64, struct pending_call, pending, 16384);

/* The first 28 bytes of a sockaddr_in / sockaddr_in6. */
struct sockaddr_head {
	__u16 family;
	__u16 port_be;
	__u32 v4_or_flowinfo;
	__u8 v6[16];
	__u32 scope_id;
};

static __always_inline __u16 swap16(__u16 v)
{
	return (v >> 8) | (v << 8);
}

/* Reads a user sockaddr; IPv6 only when the family says so (an IPv4 one may be 16 bytes). */
static __always_inline int read_sockaddr(__u64 uaddr, struct sockaddr_head *sa)
{
	if (uaddr == 0)
		return -1;
	if (bpf_probe_read_user(sa, 8, (void *)uaddr) != 0)
		return -1;
	if (sa->family == X_AF_INET6 &&
	    bpf_probe_read_user(&sa->v6, sizeof(sa->v6), (void *)(uaddr + 8)) != 0)
		return -1;
	return 0;
}

static __always_inline void save_call(__u64 a, __u64 b, __s32 fd, __u16 op)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_call p = {.a = a, .b = b, .fd = fd, .op = op};
	pending.update(&id, &p);
}

/* Takes the saved arguments if they belong to a call with op in [lo, hi]: an entry left by a
 * call whose exit we never saw must not be mistaken for this one. */
static __always_inline int take_call(struct pending_call *out, __u16 lo, __u16 hi)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_call *p = pending.lookup(&id);
	if (!p)
		return -1;
	*out = *p;
	pending.delete(&id);
	return (out->op >= lo && out->op <= hi) ? 0 : -1;
}

static __always_inline void open_conn(__u32 tgid, __s32 fd, __u8 role, struct sockaddr_head *peer,
				      __u16 family, __u16 local_port, __u8 flags, __s32 listen_fd)
{
	__u64 key = fd_key(tgid, fd);
	struct conn_state st = {};
	st.conn_id = next_conn_id();
	st.family = family;
	st.peer_port = peer ? swap16(peer->port_be) : 0;
	st.role = role;
	if (conns.update(&key, &st) != 0) {
		bump(CNT_CONN_TABLE_FULL);
		return;
	}
	bump(CNT_CONNS_OPENED);
	mark_pid_tracked(tgid);

	struct conn_event *ev = events.ringbuf_reserve(sizeof(struct conn_event));
	if (!ev) {
		bump(CNT_RINGBUF_DROPS);
		return;
	}
	fill_header(&ev->hdr, EV_CONN_OPEN, st.conn_id, 0, fd, 0, role, flags);
	ev->family = family;
	ev->peer_port = st.peer_port;
	ev->local_port = local_port;
	ev->_pad = 0;
	ev->listen_fd = listen_fd;
	ev->_pad2 = 0;
	__builtin_memset(ev->peer_addr, 0, sizeof(ev->peer_addr));
	__builtin_memset(ev->local_addr, 0, sizeof(ev->local_addr));
	if (peer && family == X_AF_INET)
		__builtin_memcpy(ev->peer_addr, &peer->v4_or_flowinfo, 4);
	else if (peer && family == X_AF_INET6)
		__builtin_memcpy(ev->peer_addr, peer->v6, 16);
	events.ringbuf_submit(ev, 0);
}

/* ---- socket bookkeeping ---------------------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
	if (args->family != X_AF_INET && args->family != X_AF_INET6)
		return 0;
	save_call(args->family, args->type, -1, PC_SOCKET);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
	struct pending_call p;
	if (take_call(&p, PC_SOCKET, PC_SOCKET) != 0 || args->ret < 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 key = fd_key(tgid, (__s32)args->ret);
	struct sock_info si = {.family = (__u16)p.a, .type = (__u16)(p.b & 0xf)};
	socks.update(&key, &si);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_bind)
{
	save_call((__u64)args->umyaddr, 0, args->fd, PC_BIND);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_bind)
{
	struct pending_call p;
	if (take_call(&p, PC_BIND, PC_BIND) != 0 || args->ret != 0)
		return 0;
	struct sockaddr_head sa = {};
	if (read_sockaddr(p.a, &sa) != 0)
		return 0;
	if (sa.family != X_AF_INET && sa.family != X_AF_INET6)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 key = fd_key(tgid, p.fd);
	struct sock_info *si = socks.lookup(&key);
	if (si) {
		si->bound_port = swap16(sa.port_be);
	} else {
		struct sock_info n = {.family = sa.family, .bound_port = swap16(sa.port_be)};
		socks.update(&key, &n);
	}
	return 0;
}

/* ---- connection start and end ----------------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!task_allowed(tgid))
		return 0;
	save_call((__u64)args->uservaddr, 0, args->fd, PC_CONNECT);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
	struct pending_call p;
	if (take_call(&p, PC_CONNECT, PC_CONNECT) != 0)
		return 0;
	if (args->ret != 0 && args->ret != -X_EINPROGRESS)
		return 0;
	struct sockaddr_head sa = {};
	if (read_sockaddr(p.a, &sa) != 0)
		return 0;
	if (sa.family != X_AF_INET && sa.family != X_AF_INET6)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 key = fd_key(tgid, p.fd);
	__u8 flags = 0;
	struct sock_info *si = socks.lookup(&key);
	if (si && si->type != 0 && si->type != X_SOCK_STREAM)
		return 0; /* a connected UDP socket (DNS resolvers do this) */
	if (!si || si->type == 0)
		flags |= EVF_UNVERIFIED;
	if (!port_allowed(swap16(sa.port_be)))
		return 0;
	open_conn(tgid, p.fd, ROLE_CLIENT, &sa, sa.family, si ? si->bound_port : 0, flags, -1);
	return 0;
}

static __always_inline int accept_enter(__s32 fd, __u64 uaddr)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!task_allowed(tgid))
		return 0;
	save_call(uaddr, 0, fd, PC_ACCEPT);
	return 0;
}

static __always_inline int accept_exit(long ret)
{
	struct pending_call p;
	if (take_call(&p, PC_ACCEPT, PC_ACCEPT) != 0 || ret < 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 lkey = fd_key(tgid, p.fd);
	struct sock_info *listener = socks.lookup(&lkey);
	struct sockaddr_head sa = {};
	int have_peer = read_sockaddr(p.a, &sa) == 0 && sa.family != 0;
	__u16 family = have_peer ? sa.family : (listener ? listener->family : 0);
	if (family != 0 && family != X_AF_INET && family != X_AF_INET6)
		return 0; /* a unix socket */
	__u16 local_port = listener ? listener->bound_port : 0;
	__u8 flags = 0;
	if (family == 0 || local_port == 0)
		flags |= EVF_UNVERIFIED;
	if (!port_allowed(local_port))
		return 0;
	open_conn(tgid, (__s32)ret, ROLE_SERVER, have_peer ? &sa : 0, family, local_port, flags,
		  p.fd);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
	return accept_enter(args->fd, (__u64)args->upeer_sockaddr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
	return accept_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
	return accept_enter(args->fd, (__u64)args->upeer_sockaddr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
	return accept_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 key = fd_key(tgid, (__s32)args->fd);
	socks.delete(&key);
	struct conn_state *c = conns.lookup(&key);
	if (!c)
		return 0;
	emit_simple(EV_CONN_CLOSE, c->conn_id, 0, (__s32)args->fd, c->role);
	conns.delete(&key);
	return 0;
}

/* ---- data ------------------------------------------------------------------------------ */

static __always_inline void data_enter(__s32 fd, __u64 base, __u64 iovcnt, __u16 op)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 key = fd_key(id >> 32, fd);
	if (!conns.lookup(&key)) {
		/* An SSL call moving bytes over an IP socket we chose not to track (the port filter
		 * excluded it): drop that SSL object's plaintext too. Only sockets seen created count;
		 * OpenSSL also reads files (certificate stores) inside its calls. */
		if (port_filter_on() && socks.lookup(&key)) {
			struct ssl_call *sc = current_ssl_call(id);
			if (sc)
				ignore_ssl(id >> 32, sc->ssl);
		}
		return;
	}
	save_call(base, iovcnt, fd, op);
}

/* sendmsg/recvmsg: the bytes are in msg->msg_iov[0 .. msg_iovlen). */
static __always_inline void msg_enter(__s32 fd, __u64 umsg, __u16 op)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 key = fd_key(id >> 32, fd);
	if (!conns.lookup(&key))
		return;
	__u64 head[4] = {}; /* msg_name, msg_namelen, msg_iov, msg_iovlen */
	if (bpf_probe_read_user(head, sizeof(head), (void *)umsg) != 0)
		return;
	if (head[2] == 0 || head[3] == 0)
		return;
	save_call(head[2], head[3], fd, op);
}

static __always_inline int looks_like_tls(__u64 base, __u64 iovcnt)
{
	__u64 first = base;
	if (iovcnt > 0) {
		struct user_iovec v = {};
		if (bpf_probe_read_user(&v, sizeof(v), (void *)base) != 0 || v.len < 3)
			return 0;
		first = v.base;
	}
	__u8 b[3] = {};
	if (bpf_probe_read_user(b, sizeof(b), (void *)first) != 0)
		return 0;
	/* TLS record: content type 20..23 (change_cipher_spec, alert, handshake, application
	 * data), then version major 3, minor 0..4. No HTTP/1 message starts with a control byte. */
	return b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 0x03 && b[2] <= 0x04;
}

/* Ciphertext on this thread, outside any SSL call: pair it with an SSL object (memory BIOs). */
static __always_inline void note_cipher(__u64 id, struct conn_state *c, __s32 fd, __u8 dir)
{
	struct thread_tls *t = thread_tls_state.lookup(&id);
	__u64 now = bpf_ktime_get_ns();
	if (dir == DIR_INGRESS) {
		struct thread_tls n = {};
		if (t)
			n = *t;
		n.read_conn_id = c->conn_id;
		n.read_mono_ns = now;
		n.read_fd = fd;
		n.read_role = c->role;
		thread_tls_state.update(&id, &n);
		return;
	}
	if (!t || t->write_ssl == 0)
		return;
	struct capture_config *cfg = get_config();
	__u64 window = cfg ? cfg->bind_window_ns : 0;
	if (now - t->write_mono_ns <= window)
		bind_ssl(id >> 32, t->write_ssl, c, fd, BIND_THREAD_RECENT);
	t->write_ssl = 0;
}

static __always_inline void data_exit(long ret, __u8 dir)
{
	struct pending_call p;
	if (take_call(&p, OP_READ, OP_RECVMSG) != 0 || ret <= 0)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u64 key = fd_key(tgid, p.fd);
	struct conn_state *c = conns.lookup(&key);
	if (!c)
		return;
	struct ssl_call *sc = current_ssl_call(id);
	if (sc) {
		/* The ciphertext of the SSL call in progress on this thread. */
		c->cipher = 1;
		bump(CNT_TLS_CIPHER);
		bind_ssl(tgid, sc->ssl, c, p.fd, BIND_NESTED_CALL);
		return;
	}
	if (!c->cipher && c->bytes_seen == 0 && looks_like_tls(p.a, p.b))
		c->cipher = 1;
	c->bytes_seen += ret;
	if (c->cipher) {
		bump(CNT_TLS_CIPHER);
		note_cipher(id, c, p.fd, dir);
		return;
	}
	emit_data(c->conn_id, 0, p.fd, dir, c->role, 0, p.op, p.a, p.b, (__u64)ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
	data_enter((__s32)args->fd, (__u64)args->buf, 0, OP_READ);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
	data_exit(args->ret, DIR_INGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
	data_enter((__s32)args->fd, (__u64)args->buf, 0, OP_WRITE);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_write)
{
	data_exit(args->ret, DIR_EGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_readv)
{
	data_enter((__s32)args->fd, (__u64)args->vec, args->vlen, OP_READV);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_readv)
{
	data_exit(args->ret, DIR_INGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
	data_enter((__s32)args->fd, (__u64)args->vec, args->vlen, OP_WRITEV);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_writev)
{
	data_exit(args->ret, DIR_EGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
	data_enter(args->fd, (__u64)args->buff, 0, OP_SENDTO);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
	data_exit(args->ret, DIR_EGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
	data_enter(args->fd, (__u64)args->ubuf, 0, OP_RECVFROM);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
	data_exit(args->ret, DIR_INGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
	msg_enter(args->fd, (__u64)args->msg, OP_SENDMSG);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
	data_exit(args->ret, DIR_EGRESS);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
	msg_enter(args->fd, (__u64)args->msg, OP_RECVMSG);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
	data_exit(args->ret, DIR_INGRESS);
	return 0;
}
