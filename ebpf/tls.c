/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS plaintext from OpenSSL uprobes: SSL_write, SSL_read, SSL_write_ex, SSL_read_ex (entry and
 * return), SSL_set_fd and SSL_free. The loader attaches them to every libssl a watched process
 * maps and to executables that carry OpenSSL and export its symbols (Node.js).
 *
 * Each SSL object is tied to its socket by, in order of certainty: SSL_set_fd; a socket call
 * made inside the SSL call on the same thread (socket BIOs: the call's own ciphertext, which
 * syscalls.c then drops); the ciphertext read just before SSL_read, or written just after
 * SSL_write, on the same thread (memory BIOs, as Node.js and Python asyncio use). Until then its
 * records carry conn_id 0 and the SSL pointer; a tls_bind_event announces the tie.
 *
 * Pasted after common.h by the loader (it uses no map of the other families).
 */

static __always_inline int ssl_enter(struct pt_regs *ctx, __u16 op, int has_out_len)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!task_allowed(id >> 32))
		return 0;
	struct ssl_stack *st = ssl_calls.lookup(&id);
	if (!st) {
		struct ssl_stack fresh = {};
		ssl_calls.update(&id, &fresh);
		st = ssl_calls.lookup(&id);
		if (!st)
			return 0;
	}
	__u32 depth = st->depth;
	if (depth >= SSL_STACK_DEPTH || st->overflow) {
		st->overflow += 1;
		return 0;
	}
	struct ssl_call *f = &st->frames[depth];
	f->ssl = PT_REGS_PARM1(ctx);
	f->buf = PT_REGS_PARM2(ctx);
	f->out_len_ptr = has_out_len ? PT_REGS_PARM4(ctx) : 0;
	f->op = op;
	st->depth = depth + 1;
	return 0;
}

static __always_inline int ssl_exit(struct pt_regs *ctx, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ssl_stack *st = ssl_calls.lookup(&id);
	if (!st)
		return 0;
	if (st->overflow) {
		st->overflow -= 1;
		return 0;
	}
	if (st->depth == 0)
		return 0;
	__u32 top = st->depth - 1;
	if (top >= SSL_STACK_DEPTH)
		return 0;
	struct ssl_call c = st->frames[top];
	st->depth = top;

	__u64 n = 0;
	if (c.out_len_ptr) {
		/* SSL_read_ex / SSL_write_ex: 1 on success, the count in *out_len. */
		if ((int)PT_REGS_RC(ctx) != 1)
			return 0;
		if (bpf_probe_read_user(&n, sizeof(n), (void *)c.out_len_ptr) != 0)
			return 0;
	} else {
		int rc = (int)PT_REGS_RC(ctx);
		if (rc <= 0)
			return 0;
		n = (__u64)rc;
	}
	if (n == 0)
		return 0;

	struct ssl_key k = {.ssl = c.ssl, .pid = tgid};
	struct ssl_binding *b = ssl_state.lookup(&k);
	if (b && b->ignored)
		return 0;
	if ((!b || !b->bound) && dir == DIR_INGRESS) {
		/* Memory BIO: the runtime read the ciphertext on this thread just before. */
		struct thread_tls *t = thread_tls_state.lookup(&id);
		struct capture_config *cfg = get_config();
		__u64 window = cfg ? cfg->bind_window_ns : 0;
		if (t && t->read_conn_id != 0 && bpf_ktime_get_ns() - t->read_mono_ns <= window) {
			__u64 ckey = fd_key(tgid, t->read_fd);
			struct conn_state *conn = conns.lookup(&ckey);
			if (conn && conn->conn_id == t->read_conn_id)
				bind_ssl(tgid, c.ssl, conn, t->read_fd, BIND_THREAD_RECENT);
		}
		b = ssl_state.lookup(&k);
	}
	if (!b) {
		struct ssl_binding nb = {.fd = -1};
		ssl_state.update(&k, &nb);
		mark_pid_tracked(tgid);
		b = ssl_state.lookup(&k);
		if (!b)
			return 0;
	}
	struct ssl_binding bind = *b;
	if (!bind.bound && dir == DIR_EGRESS) {
		/* Memory BIO: the runtime will write the ciphertext on this thread right after. */
		struct thread_tls *t = thread_tls_state.lookup(&id);
		struct thread_tls nt = {};
		if (t)
			nt = *t;
		nt.write_ssl = c.ssl;
		nt.write_mono_ns = bpf_ktime_get_ns();
		thread_tls_state.update(&id, &nt);
	}
	emit_data(bind.conn_id, c.ssl, bind.fd, dir, bind.role, EVF_TLS, c.op, c.buf, 0, n);
	return 0;
}

int ssl_write_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, OP_SSL_WRITE, 0);
}

int ssl_write_ex_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, OP_SSL_WRITE_EX, 1);
}

int ssl_read_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, OP_SSL_READ, 0);
}

int ssl_read_ex_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, OP_SSL_READ_EX, 1);
}

int ssl_write_return(struct pt_regs *ctx)
{
	return ssl_exit(ctx, DIR_EGRESS);
}

int ssl_read_return(struct pt_regs *ctx)
{
	return ssl_exit(ctx, DIR_INGRESS);
}

/* SSL_set_fd(ssl, fd): the most direct tie, when the application uses a socket BIO. */
int ssl_set_fd_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!task_allowed(tgid))
		return 0;
	__u64 ssl = PT_REGS_PARM1(ctx);
	__s32 fd = (__s32)PT_REGS_PARM2(ctx);
	__u64 key = fd_key(tgid, fd);
	struct conn_state *c = conns.lookup(&key);
	if (c) {
		c->cipher = 1;
		bind_ssl(tgid, ssl, c, fd, BIND_SET_FD);
	} else if (port_filter_on()) {
		ignore_ssl(tgid, ssl);
	}
	return 0;
}

/* SSL_free(ssl): the pointer may be reused for another connection; forget the tie. */
int ssl_free_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ssl_key k = {.ssl = PT_REGS_PARM1(ctx), .pid = tgid};
	struct ssl_binding *b = ssl_state.lookup(&k);
	if (!b)
		return 0;
	__u64 conn_id = b->conn_id;
	__s32 fd = b->fd;
	__u8 role = b->role;
	__u8 ignored = b->ignored;
	ssl_state.delete(&k);
	if (!ignored)
		emit_simple(EV_TLS_FREE, conn_id, k.ssl, fd, role);
	return 0;
}
