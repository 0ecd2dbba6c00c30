/*
 * A C program that uses libqemumachine through its header only: it launches real QEMU
 * processes, runs QMP commands, waits for events, drives the guest fixture's console, walks
 * every error path, and shuts down. It prints one line per check and exits non-zero if any
 * check failed.
 *
 * Environment: QM_TEST_KERNEL, QM_TEST_INITRD and QM_TEST_APPEND name the guest fixture
 * (tests/src/fixture.rs); QM_TEST_SKIP_GUEST=1 leaves the guest checks out (the static-link
 * run, which only needs to show that the binary launches QEMU); QM_TEST_HANDLE_CYCLES sets the
 * number of new/free cycles of the stale-handle check (default 20000; fewer under valgrind).
 *
 * QM_TEST_MODE picks another part to play, for tests/tests/c_abi.rs:
 * - "owner": launch two machines (one from a `vm` description with a port forward) with their
 *   temp dirs under QM_TEST_SCRATCH, print "OWNER <pid> <pid> <port>", and block until killed;
 * - "reaper": reap every child from another thread with waitpid(-1), and check that QEMU's exit
 *   status still arrives.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qemumachine.h"

static int failures;
static int checks;

static const char *last_error(void) {
    static char buf[4096];
    qm_last_error_message(buf, sizeof buf);
    return buf;
}

#define CHECK(cond, what)                                                                    \
    do {                                                                                     \
        checks++;                                                                            \
        if (cond) {                                                                          \
            printf("ok   %s\n", what);                                                       \
        } else {                                                                             \
            printf("FAIL %s (%s:%d) status=%s last error: %s\n", what, __FILE__, __LINE__,   \
                   qm_status_name(qm_last_error_status()), last_error());                    \
            failures++;                                                                      \
        }                                                                                    \
        fflush(stdout);                                                                      \
    } while (0)

#define CHECK_STATUS(call, expected, what) CHECK((call) == (expected), what)

static void check_version(void) {
    CHECK(qm_version() == QM_VERSION_NUMBER, "qm_version() matches QM_VERSION_NUMBER");
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", QM_VERSION_MAJOR, QM_VERSION_MINOR,
             QM_VERSION_PATCH);
    CHECK(strcmp(qm_version_string(), expected) == 0, "qm_version_string() matches the macros");
    CHECK(strcmp(qm_status_name(QM_STATUS_TIMEOUT), "QM_STATUS_TIMEOUT") == 0,
          "qm_status_name names codes");
    CHECK(strcmp(qm_status_name(9999), "QM_STATUS_UNKNOWN") == 0,
          "qm_status_name(unknown) is not NULL");
}

static void check_argument_errors(void) {
    qm_config *config = NULL;
    CHECK_STATUS(qm_config_new(NULL), QM_STATUS_NULL_ARGUMENT, "qm_config_new(NULL) fails");
    CHECK(strstr(last_error(), "out") != NULL, "the message names the NULL argument");
    size_t need = qm_last_error_message(NULL, 0);
    CHECK(need == strlen(last_error()), "qm_last_error_message(NULL, 0) returns the length");
    char small[4];
    size_t full = qm_last_error_message(small, sizeof small);
    CHECK(full == need && strlen(small) == 3, "a short buffer gets a truncated, terminated copy");
    char *dup = qm_last_error_message_dup();
    CHECK(dup != NULL && strcmp(dup, last_error()) == 0, "qm_last_error_message_dup copies it");
    qm_string_free(dup);
    qm_string_free(NULL);

    CHECK_STATUS(qm_config_from_json("{\"args\": [", &config), QM_STATUS_INVALID_JSON,
                 "truncated JSON is QM_STATUS_INVALID_JSON");
    CHECK(config == NULL, "the out-pointer is NULL after a failure");
    CHECK_STATUS(qm_config_from_json("{\"argz\": []}", &config), QM_STATUS_INVALID_JSON,
                 "an unknown field is QM_STATUS_INVALID_JSON");
    CHECK(strstr(last_error(), "argz") != NULL, "the message names the unknown field");
    CHECK_STATUS(qm_config_from_json("{\"accel\": \"warp\"}", &config), QM_STATUS_INVALID_JSON,
                 "an unknown accel name is rejected");

    CHECK_STATUS(qm_config_new(&config), QM_STATUS_OK, "qm_config_new");
    CHECK_STATUS(qm_config_set_accel(config, 42), QM_STATUS_INVALID_ARGUMENT,
                 "an out-of-range accel value is rejected");
    CHECK_STATUS(qm_config_set_accel(config, -1), QM_STATUS_INVALID_ARGUMENT,
                 "a negative accel value is rejected");
    CHECK_STATUS(qm_config_add_arg(config, NULL), QM_STATUS_NULL_ARGUMENT,
                 "qm_config_add_arg(NULL) fails");
    CHECK_STATUS(qm_config_add_fd(config, -5, 1, NULL), QM_STATUS_INVALID_ARGUMENT,
                 "a negative fd is rejected");
    CHECK_STATUS(qm_config_add_fd(config, 987, 1, NULL), QM_STATUS_INVALID_ARGUMENT,
                 "a closed fd is rejected");
    CHECK_STATUS(qm_machine_launch((qm_config *)&failures, NULL), QM_STATUS_NULL_ARGUMENT,
                 "launch with a NULL out-pointer fails before touching the config");
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_machine_launch((qm_config *)&failures, &machine), QM_STATUS_INVALID_HANDLE,
                 "a foreign pointer is detected as an invalid handle");
    CHECK_STATUS(qm_machine_execute((qm_machine *)config, "query-status", NULL, -1, NULL),
                 QM_STATUS_INVALID_HANDLE, "a config passed as a machine is detected");
    qm_config_free(config);
    CHECK_STATUS(qm_config_set_qmp_timeout_ms(config, 1000), QM_STATUS_INVALID_HANDLE,
                 "a freed handle is detected");
    qm_config_free(config); /* a double free is detected and ignored */
    qm_config_free(NULL);
    qm_machine_free(NULL);
}

static void check_launch_failures(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"none\", \"-bogus-option\"],"
                                     " \"accel\": \"tcg\"}",
                                     &config),
                 QM_STATUS_OK, "config from JSON");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_LAUNCH_FAILED,
                 "a bad QEMU option is QM_STATUS_LAUNCH_FAILED");
    CHECK(machine == NULL, "no machine after a failed launch");
    CHECK(strstr(last_error(), "-bogus-option") != NULL,
          "the launch error holds the argv and QEMU's message");
    qm_config_free(config);

    CHECK_STATUS(qm_config_new(&config), QM_STATUS_OK, "qm_config_new");
    CHECK_STATUS(qm_config_set_binary(config, "/nonexistent/qemu-system-x86_64"), QM_STATUS_OK,
                 "set a missing binary");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_BINARY_NOT_FOUND,
                 "a missing binary is QM_STATUS_BINARY_NOT_FOUND");
    CHECK(strstr(last_error(), "/nonexistent/qemu-system-x86_64") != NULL,
          "the message names the binary");
    qm_config_free(config);
}

static void check_qmp_and_events(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    char *json = NULL;
    CHECK_STATUS(qm_config_new(&config), QM_STATUS_OK, "qm_config_new");
    const char *args[] = {"-machine", "none", "-nodefaults"};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        CHECK_STATUS(qm_config_add_arg(config, args[i]), QM_STATUS_OK, "qm_config_add_arg");
    }
    CHECK_STATUS(qm_config_set_accel(config, QM_ACCEL_TCG), QM_STATUS_OK, "set accel tcg");
    CHECK_STATUS(qm_config_set_launch_timeout_ms(config, 30000), QM_STATUS_OK,
                 "set launch timeout");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch -machine none");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    int32_t pid = 0;
    CHECK_STATUS(qm_machine_pid(machine, &pid), QM_STATUS_OK, "qm_machine_pid");
    CHECK(pid > 0 && kill(pid, 0) == 0, "the pid is a live process");

    CHECK_STATUS(qm_machine_execute(machine, "query-status", NULL, -1, &json), QM_STATUS_OK,
                 "execute query-status");
    CHECK(json != NULL && strstr(json, "\"status\":\"running\"") != NULL,
          "query-status says running");
    qm_string_free(json);
    json = NULL;

    char *status = NULL;
    CHECK_STATUS(qm_machine_status(machine, &status), QM_STATUS_OK, "qm_machine_status");
    CHECK(status != NULL && strcmp(status, "running") == 0, "status is \"running\"");
    qm_string_free(status);

    CHECK_STATUS(qm_machine_pause(machine), QM_STATUS_OK, "pause (stop)");
    CHECK_STATUS(qm_machine_event_wait(machine, "STOP", NULL, 10000, &json), QM_STATUS_OK,
                 "a STOP event arrives");
    CHECK(json != NULL && strstr(json, "\"event\":\"STOP\"") != NULL &&
              strstr(json, "\"timestamp\"") != NULL,
          "the STOP event has its name and timestamp");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_resume(machine), QM_STATUS_OK, "resume (cont)");
    CHECK_STATUS(qm_machine_event_wait(machine, "RESUME", "{\"event\": \"RESUME\"}", 10000, NULL),
                 QM_STATUS_OK, "a RESUME event matching a pattern arrives");

    CHECK_STATUS(qm_machine_execute(machine, "stop", NULL, -1, NULL), QM_STATUS_OK,
                 "execute stop");
    CHECK_STATUS(qm_machine_execute(machine, "cont", NULL, -1, NULL), QM_STATUS_OK,
                 "execute cont");
    CHECK_STATUS(qm_machine_event_wait(machine, "RESUME", NULL, 10000, NULL), QM_STATUS_OK,
                 "RESUME after cont");
    CHECK_STATUS(qm_machine_events(machine, &json), QM_STATUS_OK, "drain events");
    CHECK(json != NULL && strstr(json, "\"STOP\"") != NULL, "the drained events hold the STOP");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_events(machine, &json), QM_STATUS_OK, "drain again");
    CHECK(json != NULL && strcmp(json, "[]") == 0, "nothing is left after draining");
    qm_string_free(json);
    json = NULL;

    /* Driving the machine from our own poll loop: wait on its fd, process_io, I/O-free takes. */
    int poll_fd = -1;
    CHECK_STATUS(qm_machine_poll_fd(machine, &poll_fd), QM_STATUS_OK, "qm_machine_poll_fd");
    CHECK_STATUS(qm_machine_pause(machine), QM_STATUS_OK, "pause again");
    int seen_stop = 0;
    for (int round = 0; round < 100 && !seen_stop; round++) {
        CHECK_STATUS(qm_machine_take_events(machine, &json), QM_STATUS_OK, "take events");
        seen_stop = json != NULL && strstr(json, "\"STOP\"") != NULL;
        qm_string_free(json);
        json = NULL;
        if (!seen_stop) {
            struct pollfd pfd = {.fd = poll_fd, .events = POLLIN, .revents = 0};
            poll(&pfd, 1, 100);
            qm_machine_process_io(machine);
        }
    }
    CHECK(seen_stop, "an external poll loop sees the STOP event");
    qm_machine_resume(machine);
    CHECK_STATUS(qm_machine_event_wait(machine, "RESUME", NULL, 10000, NULL), QM_STATUS_OK,
                 "RESUME after the external loop");

    CHECK_STATUS(qm_machine_execute(machine, "no-such-command", NULL, -1, &json),
                 QM_STATUS_QMP_ERROR, "an unknown command is QM_STATUS_QMP_ERROR");
    char class_buf[64];
    qm_last_error_qmp_class(class_buf, sizeof class_buf);
    CHECK(strcmp(class_buf, "CommandNotFound") == 0, "the QMP class is CommandNotFound");
    CHECK(qm_last_error_qmp_desc(NULL, 0) > 0, "the QMP description is there");
    CHECK(json == NULL, "no reply string on error");

    /* A 10 MiB command name is refused before it is sent (QEMU would quote it back in an error
     * larger than the 10 MiB bound on a reply), with a message naming the problem; the machine
     * goes on. */
    size_t huge_len = (size_t)10 << 20;
    char *huge = malloc(huge_len + 1);
    CHECK(huge != NULL, "allocate a 10 MiB name");
    if (huge != NULL) {
        memset(huge, 'x', huge_len);
        huge[huge_len] = '\0';
        CHECK_STATUS(qm_machine_execute(machine, huge, NULL, -1, &json),
                     QM_STATUS_INVALID_ARGUMENT, "a 10 MiB command name is QM_STATUS_INVALID_ARGUMENT");
        CHECK(strstr(last_error(), "invalid QMP command name") != NULL &&
                  strstr(last_error(), "10485760 bytes") != NULL &&
                  strlen(last_error()) < 300,
              "the message names the problem and the length, and quotes only an excerpt");
        CHECK(json == NULL, "no reply string for a refused name");
        free(huge);
    }
    CHECK_STATUS(qm_machine_execute(machine, "query-status", NULL, -1, NULL), QM_STATUS_OK,
                 "the next command works");
    CHECK_STATUS(qm_machine_execute(machine, "bad name", NULL, -1, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "a name with a space is refused too");

    /* Replies keep QEMU's member order (micro, minor, major; status, singlestep, running). */
    CHECK_STATUS(qm_machine_execute(machine, "query-version", NULL, -1, &json), QM_STATUS_OK,
                 "execute query-version");
    if (json != NULL) {
        const char *micro = strstr(json, "\"micro\""), *minor = strstr(json, "\"minor\""),
                   *major = strstr(json, "\"major\"");
        CHECK(micro && minor && major && micro < minor && minor < major,
              "query-version's members come in QEMU's order");
    }
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_execute(machine, "query-status", NULL, -1, &json), QM_STATUS_OK,
                 "execute query-status again");
    if (json != NULL) {
        /* Member names only: "running" is also the value of "status". */
        const char *st = strstr(json, "\"status\":"), *single = strstr(json, "\"singlestep\":"),
                   *running = strstr(json, "\"running\":");
        CHECK(st && single && running && st < single && single < running,
              "query-status's members come in QEMU's order");
    }
    qm_string_free(json);
    json = NULL;

    CHECK_STATUS(qm_machine_execute(machine, "human-monitor-command",
                                    "{\"command-line\": \"info version\"}", 5000, &json),
                 QM_STATUS_OK, "execute with arguments");
    CHECK(json != NULL && strstr(json, "7.") != NULL, "HMP info version answers");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_execute(machine, "query-status", "[1,2]", -1, NULL),
                 QM_STATUS_INVALID_JSON, "non-object arguments are rejected");
    CHECK_STATUS(qm_machine_execute(machine, "query-status", "{nope", -1, NULL),
                 QM_STATUS_INVALID_JSON, "malformed arguments are rejected");
    CHECK_STATUS(qm_machine_event_wait(machine, "NEVER_SENT", NULL, 200, NULL), QM_STATUS_TIMEOUT,
                 "waiting for an event that never comes times out");
    CHECK_STATUS(qm_machine_event_wait(machine, "STOP", "{\"data\": ", 200, NULL),
                 QM_STATUS_INVALID_JSON, "a malformed pattern is rejected");
    char byte;
    size_t got = 99;
    CHECK_STATUS(qm_machine_console_read(machine, (uint8_t *)&byte, 1, &got), QM_STATUS_UNSUPPORTED,
                 "console_read without a console is QM_STATUS_UNSUPPORTED");

    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "graceful shutdown");
    int32_t code = -2, sig = -2;
    CHECK_STATUS(qm_machine_exit_status(machine, &code, &sig), QM_STATUS_OK, "exit status");
    CHECK(code == 0 && sig == 0, "QEMU exited with code 0");
    char *log = NULL;
    CHECK_STATUS(qm_machine_log(machine, &log), QM_STATUS_OK, "the log is readable afterwards");
    qm_string_free(log);
    CHECK(qm_machine_execute(machine, "query-status", NULL, 1000, NULL) ==
              QM_STATUS_PROCESS_EXITED,
          "execute after shutdown is QM_STATUS_PROCESS_EXITED");
    qm_machine_free(machine);
    CHECK(kill(pid, 0) != 0, "no process is left");
}

/* Console input has a bound: a machine that never runs (-S) takes little, and a write that
 * cannot hand over everything times out and says how much it did hand over. */
static void check_console_bounds(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"q35\", \"-nodefaults\", \"-S\"],"
                                     " \"accel\": \"tcg\", \"console\": true, \"max_events\": 1}",
                                     &config),
                 QM_STATUS_OK, "config of a paused machine with a console and one event slot");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch it");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    size_t len = (size_t)4 << 20;
    uint8_t *data = malloc(len);
    CHECK(data != NULL, "allocate 4 MiB");
    if (data == NULL) {
        qm_machine_free(machine);
        return;
    }
    memset(data, 'x', len);
    size_t written = 12345;
    CHECK_STATUS(qm_machine_console_write(machine, data, len, 200, &written), QM_STATUS_TIMEOUT,
                 "writing 4 MiB to a paused guest times out");
    CHECK(written > 0 && written < len, "out_written holds how many bytes were accepted");
    CHECK(strstr(last_error(), "bytes were accepted") != NULL, "the message says so too");
    size_t more = 12345;
    CHECK_STATUS(qm_machine_console_write(machine, data + written, len - written, 0, &more),
                 QM_STATUS_TIMEOUT, "with the bound full, a zero timeout returns at once");
    CHECK(more < len - written, "and accepts less than asked");
    CHECK_STATUS(qm_machine_console_write(machine, data, 0, 0, &more), QM_STATUS_OK,
                 "an empty write succeeds");
    CHECK(more == 0, "having written nothing");
    CHECK_STATUS(qm_machine_console_write(machine, NULL, 1, 0, NULL), QM_STATUS_NULL_ARGUMENT,
                 "NULL data is rejected");
    free(data);

    uint64_t dropped = 99;
    CHECK_STATUS(qm_machine_events_dropped(machine, &dropped), QM_STATUS_OK, "events_dropped");
    CHECK(dropped == 0, "no event dropped yet");
    qm_machine_resume(machine);
    qm_machine_pause(machine);
    CHECK_STATUS(qm_machine_events_dropped(machine, &dropped), QM_STATUS_OK, "events_dropped");
    CHECK(dropped == 1, "RESUME was kept, STOP dropped: the count says so");
    CHECK_STATUS(qm_machine_events_dropped(machine, NULL), QM_STATUS_NULL_ARGUMENT,
                 "events_dropped needs out_count");
    dropped = 99;
    CHECK_STATUS(qm_machine_console_bytes_dropped(machine, &dropped), QM_STATUS_OK,
                 "console_bytes_dropped");
    CHECK(dropped == 0, "no console output was dropped");
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "shut it down");
    CHECK_STATUS(qm_machine_console_write(machine, (const uint8_t *)"x", 1, 1000, &more),
                 QM_STATUS_PROCESS_EXITED, "writing after exit is QM_STATUS_PROCESS_EXITED");
    CHECK(more == 0, "having written nothing");
    qm_machine_free(machine);
}

static void check_guest_console(void) {
    const char *kernel = getenv("QM_TEST_KERNEL");
    const char *initrd = getenv("QM_TEST_INITRD");
    const char *append = getenv("QM_TEST_APPEND");
    CHECK(kernel && initrd && append, "QM_TEST_KERNEL, QM_TEST_INITRD, QM_TEST_APPEND are set");
    if (!(kernel && initrd && append)) {
        return;
    }
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    /* A small console buffer, to see output dropped from it counted. */
    CHECK_STATUS(qm_config_from_json("{\"console_buffer_bytes\": 4096}", &config), QM_STATUS_OK,
                 "config with a 4 KiB console buffer");
    const char *args[] = {"-machine", "q35", "-m", "256M", "-nodefaults", "-no-reboot",
                          "-kernel", kernel, "-initrd", initrd, "-append", append};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        qm_config_add_arg(config, args[i]);
    }
    qm_config_set_accel(config, QM_ACCEL_TCG);
    CHECK_STATUS(qm_config_set_console(config, true), QM_STATUS_OK, "enable the console");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch the guest fixture");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    char *before = NULL;
    size_t before_len = 0;
    CHECK_STATUS(qm_machine_console_wait_for(machine, "QM-GUEST-READY", 60000, &before,
                                             &before_len),
                 QM_STATUS_OK, "the guest prints its ready line");
    CHECK(before != NULL && strlen(before) <= before_len, "output before the match is returned");
    qm_string_free(before);
    CHECK_STATUS(qm_machine_console_wait_for(machine, "qm# ", 30000, NULL, NULL), QM_STATUS_OK,
                 "the guest shell prompts");
    const char *cmd = "echo answer=$((6*7))\n";
    size_t written = 0;
    CHECK_STATUS(qm_machine_console_write(machine, (const uint8_t *)cmd, strlen(cmd), -1, &written),
                 QM_STATUS_OK, "type a command");
    CHECK(written == strlen(cmd), "all of it was written");
    CHECK_STATUS(qm_machine_console_wait_for(machine, "answer=42", 30000, NULL, NULL),
                 QM_STATUS_OK, "the guest answers");
    /* The console through an external poll loop and the I/O-free taker. */
    const char *cmd2 = "echo loop=$((7*6))\n";
    qm_machine_console_write(machine, (const uint8_t *)cmd2, strlen(cmd2), -1, NULL);
    int poll_fd = -1;
    qm_machine_poll_fd(machine, &poll_fd);
    char seen[4096] = {0};
    size_t seen_len = 0;
    for (int round = 0; round < 200 && !strstr(seen, "loop=42"); round++) {
        struct pollfd pfd = {.fd = poll_fd, .events = POLLIN, .revents = 0};
        poll(&pfd, 1, 100);
        qm_machine_process_io(machine);
        size_t got = 0;
        if (seen_len + 1 < sizeof seen &&
            qm_machine_take_console(machine, (uint8_t *)seen + seen_len,
                                    sizeof seen - 1 - seen_len, &got) == QM_STATUS_OK) {
            seen_len += got;
            seen[seen_len] = 0;
        }
    }
    CHECK(strstr(seen, "loop=42") != NULL, "an external poll loop reads the guest's answer");
    CHECK_STATUS(qm_machine_console_wait_for(machine, "never printed", 300, NULL, NULL),
                 QM_STATUS_TIMEOUT, "waiting for text that never comes times out");
    CHECK_STATUS(qm_machine_console_wait_for(machine, "", 300, NULL, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "an empty pattern is rejected");
    const char *flood = "head -c 10000 /dev/zero | tr '\\0' x; echo; echo flood-done\n";
    qm_machine_console_write(machine, (const uint8_t *)flood, strlen(flood), 30000, NULL);
    CHECK_STATUS(qm_machine_console_wait_for(machine, "flood-done", 30000, NULL, NULL),
                 QM_STATUS_OK, "10 KB of output into a 4 KiB console buffer");
    uint64_t dropped = 0;
    CHECK_STATUS(qm_machine_console_bytes_dropped(machine, &dropped), QM_STATUS_OK,
                 "console_bytes_dropped");
    CHECK(dropped >= 5000, "the bytes dropped from the buffer are counted");
    const char *off = "poweroff -f\n";
    qm_machine_console_write(machine, (const uint8_t *)off, strlen(off), -1, NULL);
    CHECK_STATUS(qm_machine_wait(machine, 30000), QM_STATUS_OK, "the guest powers itself off");
    int32_t code = -2;
    CHECK_STATUS(qm_machine_exit_status(machine, &code, NULL), QM_STATUS_OK, "exit status");
    CHECK(code == 0, "QEMU exited with code 0 after the guest's poweroff");
    qm_machine_free(machine);
}

static double max_progress = -1.0;
static int progress_calls;

static void on_progress(double fraction, void *user_data) {
    CHECK(user_data == &progress_calls, "the progress callback gets its user data");
    progress_calls++;
    if (fraction < max_progress) {
        printf("FAIL progress went backwards: %f after %f\n", fraction, max_progress);
        failures++;
    }
    max_progress = fraction;
}

static void check_images(void) {
    char dir[] = "/tmp/qm-c-images-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "make a temp dir");
    char qcow[256], raw[256], missing[256];
    snprintf(qcow, sizeof qcow, "%s/disk, one.qcow2", dir);
    snprintf(raw, sizeof raw, "%s/disk.raw", dir);
    snprintf(missing, sizeof missing, "%s/missing.qcow2", dir);
    CHECK_STATUS(qm_image_create(qcow, "qcow2", 64ull << 20), QM_STATUS_OK,
                 "create a qcow2 at a path with a comma and a space");
    char *json = NULL;
    CHECK_STATUS(qm_image_info(qcow, &json), QM_STATUS_OK, "image info");
    CHECK(json && strstr(json, "\"format\":\"qcow2\"") && strstr(json, "\"virtual-size\":67108864"),
          "info reports qcow2 and 64 MiB");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_image_resize(qcow, 128ull << 20, false), QM_STATUS_OK, "grow to 128 MiB");
    CHECK_STATUS(qm_image_resize(qcow, 32ull << 20, false), QM_STATUS_INVALID_ARGUMENT,
                 "shrinking without permission is refused");
    CHECK(strstr(last_error(), "shrink") != NULL, "the message says shrink");
    CHECK_STATUS(qm_image_convert(qcow, raw, "raw", on_progress, &progress_calls), QM_STATUS_OK,
                 "convert to raw with progress");
    CHECK(progress_calls > 0 && max_progress == 1.0, "progress reached 1.0");
    CHECK_STATUS(qm_image_info(raw, &json), QM_STATUS_OK, "info of the raw copy");
    CHECK(json && strstr(json, "\"format\":\"raw\"") && strstr(json, "\"virtual-size\":134217728"),
          "the raw copy is 128 MiB");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_image_info(missing, &json), QM_STATUS_INVALID_ARGUMENT,
                 "info of a missing file fails");
    CHECK(strstr(last_error(), "missing.qcow2") != NULL, "the message names the file");
    CHECK_STATUS(qm_image_create(missing, "no format!", 1 << 20), QM_STATUS_INVALID_ARGUMENT,
                 "an invalid format name is rejected");
    CHECK_STATUS(qm_image_convert(qcow, raw, "raw", NULL, NULL), QM_STATUS_OK,
                 "convert without a callback");
    unlink(qcow);
    unlink(raw);
    CHECK(rmdir(dir) == 0, "nothing else was left in the temp dir");
}

static void check_vm_description(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    const char *json =
        "{\"accel\": \"tcg\", \"vm\": {\"memory\": \"128M\", \"vnc\": true,"
        " \"forwards\": [{\"name\": \"web\", \"host_port\": 0, \"guest_port\": 80}]}}";
    CHECK_STATUS(qm_config_from_json(json, &config), QM_STATUS_OK, "config with a vm description");
    CHECK_STATUS(qm_config_add_arg(config, "-S"), QM_STATUS_INVALID_STATE,
                 "setters are refused on a vm description");
    CHECK_STATUS(qm_config_from_json("{\"vm\": {\"memory\": \"lots\"}}", &config),
                 QM_STATUS_INVALID_JSON, "an invalid memory size is rejected");
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-S\"], \"vm\": {}}", &config),
                 QM_STATUS_INVALID_JSON, "args together with vm are rejected");
    CHECK(config == NULL, "no config after a failure");
    CHECK_STATUS(qm_config_from_json(json, &config), QM_STATUS_OK, "config again");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch the vm description");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    char *addr = NULL;
    CHECK_STATUS(qm_machine_forwarded_port(machine, "web", &addr), QM_STATUS_OK,
                 "the forward's address");
    CHECK(addr && strncmp(addr, "127.0.0.1:", 10) == 0 && atoi(addr + 10) > 0,
          "an automatically chosen host port is reported");
    qm_string_free(addr);
    CHECK_STATUS(qm_machine_forwarded_port(machine, "ssh", &addr), QM_STATUS_INVALID_ARGUMENT,
                 "an unknown forward name is an error");
    char *vnc = NULL;
    CHECK_STATUS(qm_machine_vnc_socket(machine, &vnc), QM_STATUS_OK, "the VNC socket path");
    CHECK(vnc && access(vnc, F_OK) == 0, "the VNC socket exists");
    qm_string_free(vnc);
    char shot[] = "/tmp/qm-c-shot-XXXXXX";
    CHECK(mkdtemp(shot) != NULL, "temp dir for the screenshot");
    char shot_path[128];
    snprintf(shot_path, sizeof shot_path, "%s/screen.ppm", shot);
    char *written = NULL;
    CHECK_STATUS(qm_machine_screendump(machine, shot_path, "ppm", &written), QM_STATUS_OK,
                 "screendump as PPM");
    FILE *f = written ? fopen(written, "rb") : NULL;
    char magic[3] = {0};
    CHECK(f && fread(magic, 1, 2, f) == 2 && strcmp(magic, "P6") == 0, "the screenshot is a PPM");
    if (f) {
        fclose(f);
    }
    if (written) {
        unlink(written);
    }
    qm_string_free(written);
    rmdir(shot);
    CHECK_STATUS(qm_machine_screendump(machine, shot_path, "gif", NULL),
                 QM_STATUS_INVALID_ARGUMENT, "an unknown screenshot format is rejected");
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "shut the vm down");
    qm_machine_free(machine);
}

static void check_callers_accel(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    char *json = NULL;
    /* accel left at auto: the arguments' own choice wins (QEMU refuses -accel together with
       -machine accel=, so an added -accel would fail the launch). */
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"none,accel=tcg\"]}", &config),
                 QM_STATUS_OK, "config choosing its accel in the args");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK,
                 "launch with -machine none,accel=tcg and QM_ACCEL_AUTO");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    CHECK_STATUS(qm_machine_execute(machine, "query-kvm", NULL, -1, &json), QM_STATUS_OK,
                 "execute query-kvm");
    CHECK(json != NULL && strstr(json, "\"enabled\":false") != NULL,
          "the arguments' TCG runs, not an added KVM");
    qm_string_free(json);
    qm_machine_free(machine);
}

static void check_free_running(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    qm_config_from_json("{\"args\": [\"-machine\", \"none\", \"-nodefaults\"], \"accel\": \"tcg\"}",
                        &config);
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch another");
    qm_config_free(config);
    int32_t pid = 0;
    qm_machine_pid(machine, &pid);
    qm_machine_free(machine); /* kills and reaps */
    CHECK(pid > 0 && kill(pid, 0) != 0, "freeing a running machine kills and reaps QEMU");
}

/* True if `machine` answers query-status and reports "running". */
static int answers_running(qm_machine *machine) {
    char *state = NULL;
    int ok = qm_machine_execute(machine, "query-status", NULL, 10000, NULL) == QM_STATUS_OK &&
             qm_machine_status(machine, &state) == QM_STATUS_OK && state != NULL &&
             strcmp(state, "running") == 0;
    qm_string_free(state);
    return ok;
}

/* One call on a stale config handle, chosen by `op`: true if it was refused as an invalid handle
 * (the frees return nothing: the live handles show that they reached nothing). */
static int stale_call_refused(qm_config *stale, size_t op) {
    qm_machine *as_machine = (qm_machine *)stale;
    qm_machine *out = NULL;
    switch (op % 7) {
    case 0:
        return qm_config_set_qmp_timeout_ms(stale, 1) == QM_STATUS_INVALID_HANDLE;
    case 1:
        return qm_config_add_arg(stale, "-bogus-option") == QM_STATUS_INVALID_HANDLE;
    case 2:
        return qm_machine_launch(stale, &out) == QM_STATUS_INVALID_HANDLE && out == NULL;
    case 3:
        return qm_machine_kill(as_machine) == QM_STATUS_INVALID_HANDLE;
    case 4:
        return qm_machine_execute(as_machine, "quit", NULL, 1000, NULL) ==
               QM_STATUS_INVALID_HANDLE;
    case 5:
        qm_config_free(stale);
        return 1;
    default:
        qm_machine_free(as_machine);
        return 1;
    }
}

/* Handles are ids that are never reused: a freed handle stays invalid for good, so calls and
 * frees on it never reach a handle created after it; and frees leave the last error alone. */
static void check_stale_handles(void) {
    const char *json = "{\"args\": [\"-machine\", \"none\", \"-nodefaults\"], \"accel\": \"tcg\"}";
    qm_config *config = NULL;
    CHECK_STATUS(qm_config_from_json(json, &config), QM_STATUS_OK, "config for the handle checks");

    /* free(v1); launch v2; free(v1) again: v2 is untouched. */
    qm_machine *v1 = NULL;
    for (int round = 0; round < 3; round++) {
        qm_machine *v2 = NULL;
        CHECK_STATUS(qm_machine_launch(config, &v1), QM_STATUS_OK, "launch v1");
        qm_machine_free(v1);
        CHECK_STATUS(qm_machine_launch(config, &v2), QM_STATUS_OK, "launch v2 after freeing v1");
        int32_t pid = 0;
        qm_machine_pid(v2, &pid);
        qm_machine_free(v1); /* stale */
        CHECK(pid > 0 && kill(pid, 0) == 0 && answers_running(v2),
              "a stale qm_machine_free leaves the newer machine running");
        CHECK_STATUS(qm_machine_pid(v1, &pid), QM_STATUS_INVALID_HANDLE,
                     "the freed handle stays invalid");
        qm_machine_free(v2);
    }

    /* Frees between a failing call and the reading of its error leave the error alone. */
    qm_machine *machine = NULL;
    qm_config *other = NULL;
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch for the error check");
    CHECK_STATUS(qm_config_new(&other), QM_STATUS_OK, "qm_config_new");
    CHECK_STATUS(qm_machine_execute(machine, "no-such-command", NULL, -1, NULL),
                 QM_STATUS_QMP_ERROR, "a failing call");
    char before[512];
    snprintf(before, sizeof before, "%s", last_error());
    qm_machine_free(v1);                  /* stale */
    qm_config_free((qm_config *)machine); /* the wrong type: ignored */
    qm_machine_free(NULL);
    qm_config_free(other);   /* live */
    qm_machine_free(machine); /* live */
    char class_buf[64];
    qm_last_error_qmp_class(class_buf, sizeof class_buf);
    CHECK(qm_last_error_status() == QM_STATUS_QMP_ERROR && strcmp(last_error(), before) == 0 &&
              strcmp(class_buf, "CommandNotFound") == 0,
          "qm_machine_free and qm_config_free leave the last error as it was");

    /* New/free cycles; while each new config lives, calls on the last 64 freed handles and on
     * the first one are refused, and reach neither it nor a live config and machine. */
    size_t cycles = 20000;
    const char *env = getenv("QM_TEST_HANDLE_CYCLES");
    if (env != NULL && atol(env) > 0) {
        cycles = (size_t)atol(env);
    }
    qm_machine *live = NULL;
    CHECK_STATUS(qm_machine_launch(config, &live), QM_STATUS_OK, "launch a machine to keep");
    CHECK_STATUS(qm_config_add_arg(config, "-S"), QM_STATUS_OK, "the kept config starts paused");
    enum { WINDOW = 64 };
    qm_config *window[WINDOW];
    qm_config *first = NULL;
    size_t held = 0, next = 0, bad_cycle = 0;
    int refused = 1;
    for (size_t i = 0; i < cycles && refused; i++) {
        qm_config *fresh = NULL;
        if (qm_config_new(&fresh) != QM_STATUS_OK) {
            refused = 0;
            break;
        }
        for (size_t j = 0; j <= held; j++) {
            qm_config *stale = j < held ? window[j] : first;
            if (stale != NULL && (!stale_call_refused(stale, i + j) || stale == fresh)) {
                refused = 0;
            }
        }
        if (qm_config_set_launch_timeout_ms(fresh, 30000) != QM_STATUS_OK) {
            refused = 0; /* a stale free reached it */
        }
        qm_config_free(fresh);
        if (first == NULL) {
            first = fresh;
        }
        window[next] = fresh;
        next = (next + 1) % WINDOW;
        held += held < WINDOW;
        bad_cycle = i;
    }
    char what[128];
    snprintf(what, sizeof what, "calls on stale handles are refused (%zu new/free cycles)",
             refused ? cycles : bad_cycle);
    CHECK(refused, what);
    CHECK(live != NULL && answers_running(live), "the kept machine still runs");
    /* The kept config still holds its own settings (no bogus argument, its timeouts). */
    qm_machine *from_config = NULL;
    CHECK_STATUS(qm_machine_launch(config, &from_config), QM_STATUS_OK,
                 "the kept config still launches");
    char *state = NULL;
    CHECK(qm_machine_status(from_config, &state) == QM_STATUS_OK && state != NULL &&
              strcmp(state, "prelaunch") == 0,
          "with its own arguments (-S: prelaunch)");
    qm_string_free(state);
    qm_machine_free(from_config);
    qm_machine_free(live);
    qm_config_free(config);
}

/* ---- ownership: threads, SIGCHLD, forking wrappers, the owner dying ---------------------- */

static const char *NONE_JSON =
    "{\"args\": [\"-machine\", \"none\", \"-nodefaults\"], \"accel\": \"tcg\"}";

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *launch_on_thread(void *arg) {
    (void)arg;
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    if (qm_config_from_json(NONE_JSON, &config) == QM_STATUS_OK) {
        qm_machine_launch(config, &machine);
    }
    qm_config_free(config);
    return machine;
}

static void check_thread_exit(void) {
    pthread_t thread;
    void *result = NULL;
    CHECK(pthread_create(&thread, NULL, launch_on_thread, NULL) == 0 &&
              pthread_join(thread, &result) == 0 && result != NULL,
          "a machine launched on a pthread that then exits");
    qm_machine *machine = result;
    /* The launching thread is gone; use the machine from this one for 5 s. */
    double start = now_seconds();
    int rounds = 0, good = 0;
    while (now_seconds() - start < 5.0) {
        rounds++;
        good += answers_running(machine);
        sleep_ms(100);
    }
    CHECK(rounds > 0 && good == rounds,
          "it answers from the main thread for 5 s after its thread exited");
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "and shuts down cleanly");
    qm_machine_free(machine);
}

/* How many live (non-zombie) processes have `marker` in their command line. */
static int count_marked(const char *marker) {
    DIR *proc = opendir("/proc");
    if (!proc) {
        return -1;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        char path[300];
        char buf[8192];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') {
            continue;
        }
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) {
            continue;
        }
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *paren = strrchr(buf, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'Z') {
            continue; /* a zombie about to be reaped */
        }
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        f = fopen(path, "r");
        if (!f) {
            continue;
        }
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++) {
            if (buf[i] == 0) {
                buf[i] = ' ';
            }
        }
        buf[n] = 0;
        if (strstr(buf, marker)) {
            count++;
        }
    }
    closedir(proc);
    return count;
}

static void check_forking_wrapper(void) {
    char marker[64];
    snprintf(marker, sizeof marker, "qm-c-forking-wrapper-%d", (int)getpid());
    char json[512];
    snprintf(json, sizeof json,
             "{\"wrapper\": [\"sh\", \"-c\", \"\\\"$@\\\"; exit $?\", \"sh\"],"
             " \"args\": [\"-machine\", \"none\", \"-nodefaults\", \"-name\", \"%s\"],"
             " \"accel\": \"tcg\"}",
             marker);
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json(json, &config), QM_STATUS_OK, "a forking wrapper config");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK,
                 "launch under a wrapper that forks QEMU");
    qm_config_free(config);
    CHECK(count_marked(marker) == 2, "the wrapper and QEMU both run");
    CHECK(answers_running(machine), "QMP reaches QEMU through the wrapper");
    CHECK_STATUS(qm_machine_kill(machine), QM_STATUS_OK, "kill");
    int left = 1;
    for (int i = 0; i < 2000 && left; i++) {
        left = count_marked(marker);
        if (left) {
            sleep_ms(5);
        }
    }
    CHECK(left == 0, "kill reaches QEMU too: nothing is left behind");
    qm_machine_free(machine);
}

static void check_sigchld_ignored(void) {
    struct sigaction ignore, old;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGCHLD, &ignore, &old);
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    qm_config_from_json(NONE_JSON, &config);
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK,
                 "launch with SIGCHLD ignored");
    qm_config_free(config);
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK,
                 "shutdown with SIGCHLD ignored sees QEMU exit");
    int code = -2, sig = -2;
    CHECK(qm_machine_exit_status(machine, &code, &sig) == QM_STATUS_OK && code == 0 && sig == 0,
          "and its exit status (0) is still known");
    qm_machine_free(machine);
    sigaction(SIGCHLD, &old, NULL);
}

/* QM_TEST_MODE=owner: see the top of the file. */
static int play_owner(void) {
    const char *scratch = getenv("QM_TEST_SCRATCH");
    if (!scratch) {
        fprintf(stderr, "QM_TEST_SCRATCH is not set\n");
        return 2;
    }
    char json[1024];
    qm_config *config = NULL;
    qm_machine *plain = NULL, *vm = NULL;
    snprintf(json, sizeof json,
             "{\"args\": [\"-machine\", \"none\", \"-nodefaults\"], \"accel\": \"tcg\","
             " \"temp_dir\": \"%s\"}",
             scratch);
    if (qm_config_from_json(json, &config) || qm_machine_launch(config, &plain)) {
        fprintf(stderr, "owner: %s\n", last_error());
        return 2;
    }
    qm_config_free(config);
    snprintf(json, sizeof json,
             "{\"accel\": \"tcg\", \"temp_dir\": \"%s\", \"vm\": {\"machine\": "
             "{\"type\": \"q35\"}, \"memory\": \"64M\", \"forwards\": [{\"name\": "
             "\"ssh\", \"host_port\": 0, \"guest_port\": 22}]}}",
             scratch);
    if (qm_config_from_json(json, &config) || qm_machine_launch(config, &vm)) {
        fprintf(stderr, "owner: %s\n", last_error());
        return 2;
    }
    qm_config_free(config);
    int32_t pid1 = 0, pid2 = 0;
    char *address = NULL;
    qm_machine_pid(plain, &pid1);
    qm_machine_pid(vm, &pid2);
    qm_machine_forwarded_port(vm, "ssh", &address);
    const char *port = address ? strrchr(address, ':') : NULL;
    printf("OWNER %d %d %s\n", (int)pid1, (int)pid2, port ? port + 1 : "0");
    fflush(stdout);
    qm_string_free(address);
    char byte;
    while (read(0, &byte, 1) != 0) {
        /* blocks until killed */
    }
    return 0;
}

static void *reap_everything(void *arg) {
    (void)arg;
    for (;;) {
        int status;
        if (waitpid(-1, &status, 0) < 0 && errno == ECHILD) {
            sleep_ms(1);
        }
    }
    return NULL;
}

/* QM_TEST_MODE=reaper: see the top of the file. */
static int play_reaper(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, reap_everything, NULL);
    pthread_detach(thread);
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    qm_config_from_json(NONE_JSON, &config);
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK,
                 "launch while another thread reaps with waitpid(-1)");
    qm_config_free(config);
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK,
                 "shutdown sees QEMU exit while another thread reaps");
    int code = -2;
    CHECK(qm_machine_exit_status(machine, &code, NULL) == QM_STATUS_OK && code == 0,
          "QEMU's exit status (0) is not taken by the other thread's waitpid");
    qm_machine_free(machine);
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

int main(void) {
    const char *mode = getenv("QM_TEST_MODE");
    if (mode && strcmp(mode, "owner") == 0) {
        return play_owner();
    }
    if (mode && strcmp(mode, "reaper") == 0) {
        return play_reaper();
    }
    check_version();
    check_argument_errors();
    check_launch_failures();
    check_qmp_and_events();
    check_free_running();
    check_stale_handles();
    check_console_bounds();
    check_callers_accel();
    check_thread_exit();
    check_forking_wrapper();
    check_sigchld_ignored();
    check_images();
    check_vm_description();
    const char *skip = getenv("QM_TEST_SKIP_GUEST");
    if (!(skip && strcmp(skip, "1") == 0)) {
        check_guest_console();
    }
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
