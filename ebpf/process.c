/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process lifecycle: exec (so the loader looks for OpenSSL in the new image), the opening of a
 * file named like libssl (so the loader attaches to a library a container brings, before the
 * process's first TLS call), and the exit of a process that owns tracked connections or SSL
 * objects (so user space can finish its exchanges and clear its map entries: a process that
 * exits closes its sockets without close()).
 *
 * Pasted after common.h by the loader.
 */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!task_allowed(tgid))
		return 0;
	emit_simple(EV_PROC_EXEC, 0, 0, -1, ROLE_UNKNOWN);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	if (!args->group_dead)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!tracked_pids.lookup(&tgid))
		return 0;
	tracked_pids.delete(&tgid);
	emit_simple(EV_PROC_EXIT, 0, 0, -1, ROLE_UNKNOWN);
	return 0;
}

/* Path assembly area for openat (larger than the stack allows). */
BPF_PERCPU_ARRAY(path_scratch, struct path_event, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!task_allowed(tgid))
		return 0;
	__u32 zero = 0;
	struct path_event *p = path_scratch.lookup(&zero);
	if (!p)
		return 0;
	long n = bpf_probe_read_user_str(p->path, sizeof(p->path), args->filename);
	if (n < 7)
		return 0;
	int found = 0;
	for (int i = 0; i < PATH_BYTES - 6; i++) {
		if (i + 6 >= n)
			break;
		if (p->path[i] == 'l' && p->path[i + 1] == 'i' && p->path[i + 2] == 'b' &&
		    p->path[i + 3] == 's' && p->path[i + 4] == 's' && p->path[i + 5] == 'l') {
			found = 1;
			break;
		}
	}
	if (!found)
		return 0;
	fill_header(&p->hdr, EV_LIB_OPEN, 0, 0, -1, 0, ROLE_UNKNOWN, 0);
	if (events.ringbuf_output(p, sizeof(*p), 0) != 0)
		bump(CNT_RINGBUF_DROPS);
	return 0;
}
