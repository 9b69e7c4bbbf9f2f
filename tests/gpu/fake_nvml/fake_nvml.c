/*
 * A scripted stand-in for libnvidia-ml.so.1, for tests and benchmarks.
 *
 * Takes in: a scenario file named by the environment variable FAKE_NVML_SCENARIO,
 * read on the first nvmlInit (see scenario.py beside this file for the format and a writer).
 * Gives out: the NVML entry points the infersight GPU sampler calls, with the C signatures and
 * struct layouts that NVIDIA's own Python binding (nvidia-ml-py, `pynvml`) expects, so that the
 * real binding code runs unchanged on top of it.
 *
 * Time: scenario time in seconds. By default it runs on CLOCK_MONOTONIC from the first
 * nvmlInit; a test that calls fake_nvml_set_time() takes control of it, so every read is
 * deterministic. The energy counter is the exact integral of the scripted power curve, which
 * gives tests a ground truth to compare energy attribution against.
 *
 * Not a model of any real GPU: values are whatever the scenario says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999,
};

/* Fields a scenario can script over time ("at" lines). */
enum field {
    F_GPU_UTIL,
    F_MEM_UTIL,
    F_MEM_USED,
    F_POWER_MW,
    F_TEMP_C,
    F_SM_CLOCK,
    F_MEM_CLOCK,
    F_CLOCK_REASONS,
    F_PCIE_TX_KBS,
    F_PCIE_RX_KBS,
    F_ECC_CORRECTED,
    F_ECC_UNCORRECTED,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "gpu_util",   "mem_util",      "mem_used",    "power_mw",    "temp_c",        "sm_clock",
    "mem_clock",  "clock_reasons", "pcie_tx_kbs", "pcie_rx_kbs", "ecc_corrected", "ecc_uncorrected",
};

/* Groups of entry points a scenario can make fail ("unsupported" / "error" lines). */
enum api {
    A_UTILIZATION,
    A_MEMORY,
    A_POWER,
    A_POWER_LIMIT,
    A_ENERGY,
    A_TEMPERATURE,
    A_CLOCKS,
    A_CLOCK_REASONS,
    A_PCIE,
    A_ECC,
    A_PROCESSES,
    A_PROCESS_UTIL,
    A_EVENTS,
    A_MIG_MODE,
    A_NAME,
    A_COUNT
};

static const char *const api_names[A_COUNT] = {
    "utilization", "memory", "power",         "power_limit", "energy",
    "temperature", "clocks", "clock_reasons", "pcie",        "ecc",
    "processes",   "process_util", "events",  "mig_mode",    "name",
};

struct point {
    double t_s;
    int field;
    unsigned long long value;
};

struct proc {
    unsigned int pid;
    double start_s;
    double end_s;
    unsigned long long mem_bytes;
    unsigned int sm_pct;
    unsigned int mem_pct;
};

struct device {
    int index; /* physical index; MIG devices carry their parent's */
    int is_mig;
    struct device *parent;
    unsigned int gi_id, ci_id;
    char uuid[96];
    char name[96];
    unsigned int mig_mode;
    unsigned int max_mig;
    unsigned long long mem_total;
    unsigned int power_limit_mw;
    unsigned long long energy_start_mj;
    double lost_at_s;
    int errors[A_COUNT];
    unsigned long long defaults[F_COUNT];
    struct point *points;
    size_t n_points, cap_points;
    struct proc *procs;
    size_t n_procs, cap_procs;
};

struct event {
    double t_s;
    struct device *dev;
    unsigned long long type;
    unsigned long long data;
};

#define MAX_DEVICES 256
#define MAX_EVENTS 4096
#define MAX_SETS 16

struct event_set {
    int in_use;
    unsigned long long mask[MAX_DEVICES];
    unsigned char delivered[MAX_EVENTS];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct device g_devices[MAX_DEVICES];
static int g_n_devices;
static struct event g_events[MAX_EVENTS];
static int g_n_events;
static struct event_set g_sets[MAX_SETS];
static int g_refcount;
static int g_loaded;
static int g_init_error;
static char g_driver_version[80] = "999.99.99-fake";
static struct timespec g_t0;
static _Atomic long long g_manual_time_ns = -1;
static _Atomic unsigned long long g_calls[64];

/* ---- time ---- */

static double now_s(void) {
    long long manual = atomic_load(&g_manual_time_ns);
    if (manual >= 0) return (double)manual / 1e9;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)(ts.tv_sec - g_t0.tv_sec) + (double)(ts.tv_nsec - g_t0.tv_nsec) / 1e9;
}

/* Take scenario time into manual control (seconds). A negative value hands it back to the
 * monotonic clock. */
EXPORT void fake_nvml_set_time(double t_s) {
    atomic_store(&g_manual_time_ns, t_s < 0 ? -1LL : (long long)llround(t_s * 1e9));
}

EXPORT double fake_nvml_get_time(void) { return now_s(); }

/* How many nvmlInit calls are not matched by nvmlShutdown yet; the scenario is read again only
 * when this is 0, so tests check it before switching scenarios. */
EXPORT int fake_nvml_refcount(void) { return g_refcount; }

/* ---- call counting, so tests can check which entry points were used and how often ---- */

enum counted {
    C_INIT,
    C_SHUTDOWN,
    C_COMPUTE_PROCS,
    C_PROCESS_UTIL,
    C_UTILIZATION,
    C_ENERGY,
    C_EVENT_WAIT,
    C_COUNTED
};
static const char *const counted_names[C_COUNTED] = {
    "nvmlInit", "nvmlShutdown", "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetProcessUtilization", "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetTotalEnergyConsumption", "nvmlEventSetWait_v2",
};

static void count(int which) { atomic_fetch_add(&g_calls[which], 1ULL); }

EXPORT unsigned long long fake_nvml_calls(const char *name) {
    for (int i = 0; i < C_COUNTED; i++)
        if (strcmp(name, counted_names[i]) == 0) return atomic_load(&g_calls[i]);
    return 0;
}

/* ---- scenario loading ---- */

static void reset_scenario(void) {
    for (int i = 0; i < g_n_devices; i++) {
        free(g_devices[i].points);
        free(g_devices[i].procs);
    }
    memset(g_devices, 0, sizeof(g_devices));
    memset(g_sets, 0, sizeof(g_sets));
    g_n_devices = 0;
    g_n_events = 0;
    g_init_error = 0;
    snprintf(g_driver_version, sizeof(g_driver_version), "%s", "999.99.99-fake");
}

static int lookup(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

static struct device *new_device(void) {
    if (g_n_devices >= MAX_DEVICES) return NULL;
    struct device *d = &g_devices[g_n_devices++];
    memset(d, 0, sizeof(*d));
    d->lost_at_s = INFINITY;
    d->mem_total = 80ULL << 30;
    d->power_limit_mw = 700000;
    d->max_mig = 7;
    d->defaults[F_TEMP_C] = 40;
    d->defaults[F_SM_CLOCK] = 1980;
    d->defaults[F_MEM_CLOCK] = 2619;
    d->defaults[F_POWER_MW] = 60000;
    return d;
}

static void copy_rest(char *dst, size_t cap, const char *rest) {
    while (*rest == ' ' || *rest == '\t') rest++;
    snprintf(dst, cap, "%s", rest);
    size_t n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == '\r' || dst[n - 1] == ' ')) dst[--n] = 0;
}

static double parse_time(const char *s) {
    if (strcmp(s, "inf") == 0) return INFINITY;
    return strtod(s, NULL);
}

static int add_point(struct device *d, double t, int field, unsigned long long v) {
    if (d->n_points == d->cap_points) {
        size_t cap = d->cap_points ? d->cap_points * 2 : 64;
        struct point *p = realloc(d->points, cap * sizeof(*p));
        if (!p) return -1;
        d->points = p;
        d->cap_points = cap;
    }
    d->points[d->n_points++] = (struct point){t, field, v};
    return 0;
}

static int add_proc(struct device *d, struct proc p) {
    if (d->n_procs == d->cap_procs) {
        size_t cap = d->cap_procs ? d->cap_procs * 2 : 16;
        struct proc *n = realloc(d->procs, cap * sizeof(*n));
        if (!n) return -1;
        d->procs = n;
        d->cap_procs = cap;
    }
    d->procs[d->n_procs++] = p;
    return 0;
}

/* Returns 0 on success; on a malformed scenario prints the line to stderr and returns -1. */
static int load_scenario(const char *path) {
    reset_scenario();
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "fake_nvml: cannot open scenario %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    struct device *cur = NULL;
    struct device *parent = NULL;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char cmd[64], a[128], b[128], c[128];
        int off = 0;
        if (sscanf(line, "%63s%n", cmd, &off) != 1) continue;
        const char *rest = line + off;
        int ok = 1;
        if (strcmp(cmd, "driver_version") == 0) {
            copy_rest(g_driver_version, sizeof(g_driver_version), rest);
        } else if (strcmp(cmd, "init_error") == 0) {
            g_init_error = atoi(rest);
        } else if (strcmp(cmd, "gpu") == 0) {
            int n = 0;
            cur = new_device();
            ok = cur && sscanf(rest, "%95s%n", cur->uuid, &n) == 1;
            if (ok) {
                int idx = 0;
                for (int i = 0; i < g_n_devices - 1; i++) idx += !g_devices[i].is_mig;
                cur->index = idx;
                copy_rest(cur->name, sizeof(cur->name), rest + n);
                parent = cur;
            }
        } else if (strcmp(cmd, "mig") == 0) {
            int n = 0;
            ok = parent != NULL;
            if (ok) cur = new_device();
            ok = ok && cur && sscanf(rest, "%95s %u %u%n", cur->uuid, &cur->gi_id, &cur->ci_id, &n) == 3;
            if (ok) {
                copy_rest(cur->name, sizeof(cur->name), rest + n);
                cur->is_mig = 1;
                cur->parent = parent;
                cur->index = parent->index;
                cur->mem_total = parent->mem_total / 7;
                /* As on real hardware, a MIG device has no power, clocks or board sensors of its
                 * own: those calls answer on the parent only. */
                int parent_only[] = {A_UTILIZATION, A_POWER,  A_POWER_LIMIT, A_ENERGY,
                                     A_TEMPERATURE, A_CLOCKS, A_CLOCK_REASONS, A_PCIE,
                                     A_ECC,         A_PROCESS_UTIL, A_EVENTS, A_MIG_MODE};
                for (size_t i = 0; i < sizeof(parent_only) / sizeof(parent_only[0]); i++)
                    cur->errors[parent_only[i]] = NVML_ERROR_NOT_SUPPORTED;
            }
        } else if (cur == NULL && strcmp(cmd, "event") != 0) {
            ok = 0;
        } else if (strcmp(cmd, "mig_mode") == 0) {
            cur->mig_mode = (unsigned)atoi(rest);
        } else if (strcmp(cmd, "max_mig") == 0) {
            cur->max_mig = (unsigned)atoi(rest);
        } else if (strcmp(cmd, "memory_total_bytes") == 0) {
            cur->mem_total = strtoull(rest, NULL, 10);
        } else if (strcmp(cmd, "power_limit_mw") == 0) {
            cur->power_limit_mw = (unsigned)strtoul(rest, NULL, 10);
        } else if (strcmp(cmd, "energy_start_mj") == 0) {
            cur->energy_start_mj = strtoull(rest, NULL, 10);
        } else if (strcmp(cmd, "lost_at") == 0) {
            cur->lost_at_s = strtod(rest, NULL);
        } else if (strcmp(cmd, "unsupported") == 0 || strcmp(cmd, "supported") == 0) {
            int code = strcmp(cmd, "supported") == 0 ? 0 : NVML_ERROR_NOT_SUPPORTED;
            char *save = NULL;
            for (char *tok = strtok_r((char *)rest, " \t\r\n", &save); tok;
                 tok = strtok_r(NULL, " \t\r\n", &save)) {
                int api = lookup(api_names, A_COUNT, tok);
                if (api < 0) { ok = 0; break; }
                cur->errors[api] = code;
            }
        } else if (strcmp(cmd, "error") == 0) {
            ok = sscanf(rest, "%127s %127s", a, b) == 2;
            int api = ok ? lookup(api_names, A_COUNT, a) : -1;
            ok = api >= 0;
            if (ok) cur->errors[api] = atoi(b);
        } else if (strcmp(cmd, "at") == 0) {
            ok = sscanf(rest, "%127s %127s %127s", a, b, c) == 3;
            int field = ok ? lookup(field_names, F_COUNT, b) : -1;
            ok = field >= 0 && add_point(cur, strtod(a, NULL), field, strtoull(c, NULL, 10)) == 0;
        } else if (strcmp(cmd, "proc") == 0) {
            struct proc p = {0};
            char start[64], end[64];
            ok = sscanf(rest, "%u %63s %63s %llu %u %u", &p.pid, start, end, &p.mem_bytes,
                        &p.sm_pct, &p.mem_pct) == 6;
            if (ok) {
                p.start_s = parse_time(start);
                p.end_s = parse_time(end);
                ok = add_proc(cur, p) == 0;
            }
        } else if (strcmp(cmd, "event") == 0) {
            /* event <t_s> <device uuid> <type mask> <data> */
            unsigned long long type = 0, data = 0;
            ok = sscanf(rest, "%127s %127s %llu %llu", a, b, &type, &data) == 4 &&
                 g_n_events < MAX_EVENTS;
            struct device *dev = NULL;
            for (int i = 0; ok && i < g_n_devices; i++)
                if (strcmp(g_devices[i].uuid, b) == 0) dev = &g_devices[i];
            ok = ok && dev != NULL;
            if (ok) g_events[g_n_events++] = (struct event){strtod(a, NULL), dev, type, data};
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "fake_nvml: %s:%d: cannot parse: %s", path, lineno, line);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

/* ---- scripted values ---- */

static unsigned long long value_at(const struct device *d, int field, double t) {
    unsigned long long v = d->defaults[field];
    for (size_t i = 0; i < d->n_points; i++)
        if (d->points[i].field == field && d->points[i].t_s <= t) v = d->points[i].value;
    return v;
}

/* Energy in mJ: the exact integral of the piecewise-constant power curve from t=0. */
static double energy_mj_at(const struct device *d, double t) {
    double e = (double)d->energy_start_mj;
    double seg_start = 0.0;
    double seg_power_mw = (double)d->defaults[F_POWER_MW];
    for (size_t i = 0; i < d->n_points; i++) {
        const struct point *p = &d->points[i];
        if (p->field != F_POWER_MW) continue;
        if (p->t_s >= t) break;
        double start = p->t_s > 0 ? p->t_s : 0;
        if (start > seg_start) {
            e += seg_power_mw * (start - seg_start);
            seg_start = start;
        }
        seg_power_mw = (double)p->value;
    }
    if (t > seg_start) e += seg_power_mw * (t - seg_start);
    return e;
}

static int proc_alive(const struct proc *p, double t) { return p->start_s <= t && t < p->end_s; }

/* ---- handle checks ---- */

static struct device *dev_of(void *h) {
    struct device *d = (struct device *)h;
    if (d < g_devices || d >= g_devices + g_n_devices) return NULL;
    return d;
}

/* Common prologue: validates the handle and applies "lost" and per-API errors. */
static nvmlReturn_t check(void *h, int api, struct device **out) {
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    struct device *d = dev_of(h);
    if (!d) return NVML_ERROR_INVALID_ARGUMENT;
    struct device *phys = d->is_mig ? d->parent : d;
    if (now_s() >= phys->lost_at_s) return NVML_ERROR_GPU_IS_LOST;
    if (api >= 0 && d->errors[api]) return d->errors[api];
    *out = d;
    return NVML_SUCCESS;
}

/* ---- init / system ---- */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    count(C_INIT);
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t ret = NVML_SUCCESS;
    if (g_refcount == 0) {
        const char *path = getenv("FAKE_NVML_SCENARIO");
        if (!path || !*path || load_scenario(path) != 0) {
            ret = NVML_ERROR_DRIVER_NOT_LOADED;
        } else if (g_init_error) {
            ret = g_init_error;
        } else {
            clock_gettime(CLOCK_MONOTONIC, &g_t0);
            g_loaded = 1;
        }
    }
    if (ret == NVML_SUCCESS) g_refcount++;
    pthread_mutex_unlock(&g_lock);
    return ret;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    count(C_SHUTDOWN);
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t ret = NVML_SUCCESS;
    if (g_refcount <= 0)
        ret = NVML_ERROR_UNINITIALIZED;
    else
        g_refcount--;
    pthread_mutex_unlock(&g_lock);
    return ret;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    if (strlen(g_driver_version) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(version, length, "%s", g_driver_version);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    snprintf(version, length, "%s", "12.999.99");
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count_out) {
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    unsigned int n = 0;
    for (int i = 0; i < g_n_devices; i++) n += !g_devices[i].is_mig;
    *count_out = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    for (int i = 0; i < g_n_devices; i++) {
        if (!g_devices[i].is_mig && (unsigned)g_devices[i].index == index) {
            if (now_s() >= g_devices[i].lost_at_s) return NVML_ERROR_GPU_IS_LOST;
            *device = &g_devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_INVALID_ARGUMENT;
}

/* ---- identity ---- */

EXPORT nvmlReturn_t nvmlDeviceGetIndex(void *h, unsigned int *index) {
    struct device *d;
    nvmlReturn_t r = check(h, -1, &d);
    if (r) return r;
    *index = (unsigned)d->index;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(void *h, char *uuid, unsigned int length) {
    struct device *d;
    nvmlReturn_t r = check(h, -1, &d);
    if (r) return r;
    if (strlen(d->uuid) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(uuid, length, "%s", d->uuid);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(void *h, char *name, unsigned int length) {
    struct device *d;
    nvmlReturn_t r = check(h, A_NAME, &d);
    if (r) return r;
    if (strlen(d->name) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(name, length, "%s", d->name);
    return NVML_SUCCESS;
}

/* ---- MIG ---- */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(void *h, unsigned int *current, unsigned int *pending) {
    struct device *d;
    nvmlReturn_t r = check(h, A_MIG_MODE, &d);
    if (r) return r;
    *current = d->mig_mode;
    *pending = d->mig_mode;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned int *n) {
    struct device *d;
    nvmlReturn_t r = check(h, A_MIG_MODE, &d);
    if (r) return r;
    *n = d->mig_mode ? d->max_mig : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned int index, void **mig) {
    struct device *d;
    nvmlReturn_t r = check(h, A_MIG_MODE, &d);
    if (r) return r;
    if (!d->mig_mode) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int seen = 0;
    for (int i = 0; i < g_n_devices; i++) {
        if (g_devices[i].is_mig && g_devices[i].parent == d) {
            if (seen == index) {
                *mig = &g_devices[i];
                return NVML_SUCCESS;
            }
            seen++;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(void *h, unsigned int *is_mig) {
    struct device *d;
    nvmlReturn_t r = check(h, -1, &d);
    if (r) return r;
    *is_mig = (unsigned)d->is_mig;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(void *h, void **parent) {
    struct device *d;
    nvmlReturn_t r = check(h, -1, &d);
    if (r) return r;
    if (!d->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *parent = d->parent;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(void *h, unsigned int *id) {
    struct device *d;
    nvmlReturn_t r = check(h, -1, &d);
    if (r) return r;
    if (!d->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->gi_id;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(void *h, unsigned int *id) {
    struct device *d;
    nvmlReturn_t r = check(h, -1, &d);
    if (r) return r;
    if (!d->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->ci_id;
    return NVML_SUCCESS;
}

/* ---- device readings ---- */

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(void *h, nvmlUtilization_t *u) {
    count(C_UTILIZATION);
    struct device *d;
    nvmlReturn_t r = check(h, A_UTILIZATION, &d);
    if (r) return r;
    double t = now_s();
    u->gpu = (unsigned)value_at(d, F_GPU_UTIL, t);
    u->memory = (unsigned)value_at(d, F_MEM_UTIL, t);
    return NVML_SUCCESS;
}

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

static unsigned long long mem_used(const struct device *d, double t) {
    unsigned long long used = value_at(d, F_MEM_USED, t);
    return used > d->mem_total ? d->mem_total : used;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(void *h, nvmlMemory_t *m) {
    struct device *d;
    nvmlReturn_t r = check(h, A_MEMORY, &d);
    if (r) return r;
    m->total = d->mem_total;
    m->used = mem_used(d, now_s());
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *h, nvmlMemory_v2_t *m) {
    struct device *d;
    nvmlReturn_t r = check(h, A_MEMORY, &d);
    if (r) return r;
    m->total = d->mem_total;
    m->reserved = 0;
    m->used = mem_used(d, now_s());
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    struct device *d;
    nvmlReturn_t r = check(h, A_POWER, &d);
    if (r) return r;
    *mw = (unsigned)value_at(d, F_POWER_MW, now_s());
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(void *h, unsigned int *mw) {
    struct device *d;
    nvmlReturn_t r = check(h, A_POWER_LIMIT, &d);
    if (r) return r;
    *mw = d->power_limit_mw;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(void *h, unsigned int *mw) {
    return nvmlDeviceGetEnforcedPowerLimit(h, mw);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
    count(C_ENERGY);
    struct device *d;
    nvmlReturn_t r = check(h, A_ENERGY, &d);
    if (r) return r;
    *mj = (unsigned long long)llround(energy_mj_at(d, now_s()));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(void *h, int sensor, unsigned int *temp) {
    struct device *d;
    nvmlReturn_t r = check(h, A_TEMPERATURE, &d);
    if (r) return r;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = (unsigned)value_at(d, F_TEMP_C, now_s());
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(void *h, int type, unsigned int *mhz) {
    struct device *d;
    nvmlReturn_t r = check(h, A_CLOCKS, &d);
    if (r) return r;
    double t = now_s();
    if (type == 1) /* NVML_CLOCK_SM */
        *mhz = (unsigned)value_at(d, F_SM_CLOCK, t);
    else if (type == 2) /* NVML_CLOCK_MEM */
        *mhz = (unsigned)value_at(d, F_MEM_CLOCK, t);
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(void *h, unsigned long long *reasons) {
    struct device *d;
    nvmlReturn_t r = check(h, A_CLOCK_REASONS, &d);
    if (r) return r;
    *reasons = value_at(d, F_CLOCK_REASONS, now_s());
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(void *h, unsigned long long *reasons) {
    return nvmlDeviceGetCurrentClocksEventReasons(h, reasons);
}

EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(void *h, int counter, unsigned int *kbs) {
    struct device *d;
    nvmlReturn_t r = check(h, A_PCIE, &d);
    if (r) return r;
    double t = now_s();
    if (counter == 0)
        *kbs = (unsigned)value_at(d, F_PCIE_TX_KBS, t);
    else if (counter == 1)
        *kbs = (unsigned)value_at(d, F_PCIE_RX_KBS, t);
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(void *h, int error_type, int counter_type,
                                                unsigned long long *n) {
    struct device *d;
    nvmlReturn_t r = check(h, A_ECC, &d);
    if (r) return r;
    if (counter_type != 0 && counter_type != 1) return NVML_ERROR_INVALID_ARGUMENT;
    double t = now_s();
    if (error_type == 0)
        *n = value_at(d, F_ECC_CORRECTED, t);
    else if (error_type == 1)
        *n = value_at(d, F_ECC_UNCORRECTED, t);
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

/* ---- processes ---- */

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *n,
                                                            nvmlProcessInfo_t *infos) {
    count(C_COMPUTE_PROCS);
    struct device *d;
    nvmlReturn_t r = check(h, A_PROCESSES, &d);
    if (r) return r;
    double t = now_s();
    unsigned int alive = 0;
    for (size_t i = 0; i < d->n_procs; i++) alive += proc_alive(&d->procs[i], t);
    if (infos == NULL || *n < alive) {
        *n = alive;
        return alive == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (size_t i = 0; i < d->n_procs; i++) {
        const struct proc *p = &d->procs[i];
        if (!proc_alive(p, t)) continue;
        infos[k].pid = p->pid;
        infos[k].usedGpuMemory = p->mem_bytes;
        /* 0xFFFFFFFF is NVML's "not applicable" for instance ids outside MIG */
        infos[k].gpuInstanceId = d->is_mig ? d->gi_id : 0xFFFFFFFFu;
        infos[k].computeInstanceId = d->is_mig ? d->ci_id : 0xFFFFFFFFu;
        k++;
    }
    *n = k;
    return NVML_SUCCESS;
}

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

/* Scenario time 0 sits at this CPU timestamp (microseconds), as NVML's samples use CPU time. */
#define EPOCH_US 1700000000000000ULL

EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(void *h, nvmlProcessUtilizationSample_t *s,
                                                    unsigned int *n,
                                                    unsigned long long last_seen_us) {
    count(C_PROCESS_UTIL);
    struct device *d;
    nvmlReturn_t r = check(h, A_PROCESS_UTIL, &d);
    if (r) return r;
    double t = now_s();
    unsigned long long ts = EPOCH_US + (unsigned long long)llround(t * 1e6);
    unsigned int alive = 0;
    if (ts > last_seen_us)
        for (size_t i = 0; i < d->n_procs; i++) alive += proc_alive(&d->procs[i], t);
    if (alive == 0) {
        *n = 0;
        return NVML_ERROR_NOT_FOUND;
    }
    if (s == NULL || *n < alive) {
        *n = alive;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (size_t i = 0; i < d->n_procs; i++) {
        const struct proc *p = &d->procs[i];
        if (!proc_alive(p, t)) continue;
        s[k] = (nvmlProcessUtilizationSample_t){p->pid, ts, p->sm_pct, p->mem_pct, 0, 0};
        k++;
    }
    *n = k;
    return NVML_SUCCESS;
}

/* ---- events ---- */

typedef struct {
    void *device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

#define SUPPORTED_EVENTS 0x7FFFULL

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(void *h, unsigned long long *types) {
    struct device *d;
    nvmlReturn_t r = check(h, A_EVENTS, &d);
    if (r) return r;
    *types = SUPPORTED_EVENTS;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(void **set) {
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_SETS; i++) {
        if (!g_sets[i].in_use) {
            memset(&g_sets[i], 0, sizeof(g_sets[i]));
            g_sets[i].in_use = 1;
            *set = &g_sets[i];
            pthread_mutex_unlock(&g_lock);
            return NVML_SUCCESS;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return NVML_ERROR_UNKNOWN;
}

static struct event_set *set_of(void *s) {
    struct event_set *es = (struct event_set *)s;
    if (es < g_sets || es >= g_sets + MAX_SETS || !es->in_use) return NULL;
    return es;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(void *h, unsigned long long types, void *set) {
    struct device *d;
    nvmlReturn_t r = check(h, A_EVENTS, &d);
    if (r) return r;
    struct event_set *es = set_of(set);
    if (!es) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~SUPPORTED_EVENTS) return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&g_lock);
    es->mask[d - g_devices] |= types;
    pthread_mutex_unlock(&g_lock);
    return NVML_SUCCESS;
}

static int take_event(struct event_set *es, nvmlEventData_t *data) {
    double t = now_s();
    for (int i = 0; i < g_n_events; i++) {
        struct event *e = &g_events[i];
        struct device *target = e->dev->is_mig ? e->dev->parent : e->dev;
        if (es->delivered[i] || e->t_s > t) continue;
        if (!(es->mask[target - g_devices] & e->type)) continue;
        es->delivered[i] = 1;
        data->device = target;
        data->eventType = e->type;
        data->eventData = e->data;
        data->gpuInstanceId = e->dev->is_mig ? e->dev->gi_id : 0xFFFFFFFFu;
        data->computeInstanceId = e->dev->is_mig ? e->dev->ci_id : 0xFFFFFFFFu;
        return 1;
    }
    return 0;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(void *set, nvmlEventData_t *data, unsigned int timeout_ms) {
    count(C_EVENT_WAIT);
    if (g_refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    struct event_set *es = set_of(set);
    if (!es) return NVML_ERROR_INVALID_ARGUMENT;
    struct timespec start, cur;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pthread_mutex_lock(&g_lock);
        int got = take_event(es, data);
        pthread_mutex_unlock(&g_lock);
        if (got) return NVML_SUCCESS;
        clock_gettime(CLOCK_MONOTONIC, &cur);
        double waited_ms = (double)(cur.tv_sec - start.tv_sec) * 1e3 +
                           (double)(cur.tv_nsec - start.tv_nsec) / 1e6;
        if (waited_ms >= (double)timeout_ms) return NVML_ERROR_TIMEOUT;
        usleep(1000);
    }
}

EXPORT nvmlReturn_t nvmlEventSetFree(void *set) {
    pthread_mutex_lock(&g_lock);
    struct event_set *es = set_of(set);
    if (es) es->in_use = 0;
    pthread_mutex_unlock(&g_lock);
    return es ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}
