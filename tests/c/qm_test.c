/*
 * A C program that uses libqemumachine through its header only: it launches real QEMU
 * processes, runs QMP commands, waits for events, drives the guest fixture's console, walks
 * every error path, and shuts down. It prints one line per check and exits non-zero if any
 * check failed.
 *
 * Environment: QM_TEST_KERNEL, QM_TEST_INITRD and QM_TEST_APPEND name the guest fixture
 * (tests/src/fixture.rs), QM_TEST_AGENT_INITRD and QM_TEST_AGENT_APPEND the same with qemu-ga
 * running in it (tests/src/qga.rs); QM_TEST_SKIP_GUEST=1 leaves the guest checks out (the static-link
 * run, which only needs to show that the binary launches QEMU); QM_TEST_HANDLE_CYCLES sets the
 * number of new/free cycles of the stale-handle check (default 20000; fewer under valgrind).
 *
 * QM_TEST_MODE picks another part to play, for tests/tests/c_abi.rs:
 * - "owner": launch two machines (one from a `vm` description with a port forward) with their
 *   temp dirs under QM_TEST_SCRATCH, print "OWNER <pid> <pid> <port> <guardian pid>", and block
 *   until killed;
 * - "reaper": reap every child from another thread with waitpid(-1), and check that QEMU's exit
 *   status still arrives (and that the first launch starts the guardian);
 * - "forker": launch a machine, fork a child (no exec) that reads stdin until end-of-file,
 *   print "FORKER <qemu pid> <child pid>", and block until killed.
 *
 * The checks follow the header's promises; the rules at its top are checked in the section
 * "the rules at the top of the header".
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* Helpers defined with the checks of the header's rules, further down. */
static int wait_unmarked(const char *marker);
static int dir_entries(const char *path);
static int has_bytes(const char *hay, size_t len, const char *needle, size_t n);
static long guardian; /* the guardian's pid, from check_guardian() */
static qm_status launch_json(const char *json, qm_machine **out);
static void sleep_ms(long ms);
static const char *NONE_JSON; /* a `-machine none` machine's config, defined further down */

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
    CHECK(strstr(last_error(), "-bogus-option") != NULL &&
              strstr(last_error(), "qemu-system-x86_64") != NULL &&
              strstr(last_error(), "invalid option") != NULL &&
              strstr(last_error(), "exit status: 1") != NULL,
          "the launch error holds QEMU's exit status, argv and message");
    qm_config_free(config);

    /* The launch timeout: a wrapper that takes too long; nothing is left behind. */
    char marker[64], scratch[] = "/tmp/qm-c-launch-XXXXXX", json[768];
    snprintf(marker, sizeof marker, "qm-c-slow-launch-%d", (int)getpid());
    CHECK(mkdtemp(scratch) != NULL, "make a scratch dir");
    snprintf(json, sizeof json,
             "{\"wrapper\": [\"sh\", \"-c\", \"sleep 60; exec \\\"$@\\\"\", \"sh\"],"
             " \"args\": [\"-machine\", \"none\", \"-name\", \"%s\"], \"accel\": \"tcg\","
             " \"temp_dir\": \"%s\"}",
             marker, scratch);
    CHECK_STATUS(qm_config_from_json(json, &config), QM_STATUS_OK, "config of a slow launch");
    CHECK_STATUS(qm_config_set_launch_timeout_ms(config, 300), QM_STATUS_OK,
                 "qm_config_set_launch_timeout_ms(300)");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_TIMEOUT,
                 "a launch that takes longer is QM_STATUS_TIMEOUT");
    CHECK(machine == NULL, "no machine after it");
    CHECK(wait_unmarked(marker) && dir_entries(scratch) == 0,
          "nothing is left behind: no process, no temp dir");
    qm_config_free(config);
    snprintf(json, sizeof json,
             "{\"args\": [\"-machine\", \"none\", \"-bogus-option\"], \"accel\": \"tcg\","
             " \"temp_dir\": \"%s\"}",
             scratch);
    CHECK_STATUS(qm_config_from_json(json, &config), QM_STATUS_OK, "config with a temp_dir");
    CHECK(qm_machine_launch(config, &machine) == QM_STATUS_LAUNCH_FAILED &&
              dir_entries(scratch) == 0,
          "a failed launch leaves no temp dir behind");
    qm_config_free(config);
    rmdir(scratch);

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

    CHECK(qm_machine_execute(machine, "query-display-options", NULL, -1, &json) == QM_STATUS_OK &&
              json && strstr(json, "\"type\":\"none\""),
          "a new config adds -display none");
    qm_string_free(json);
    json = NULL;
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

    CHECK_STATUS(qm_machine_exit_status(machine, NULL, NULL), QM_STATUS_INVALID_STATE,
                 "no exit status while QEMU runs");
    CHECK_STATUS(qm_machine_pause(machine), QM_STATUS_OK, "pause (stop)");
    CHECK(qm_machine_status(machine, &status) == QM_STATUS_OK && status &&
              strcmp(status, "paused") == 0,
          "status is \"paused\"");
    qm_string_free(status);
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
    uint64_t dropped = 99;
    CHECK(qm_machine_console_bytes_dropped(machine, &dropped) == QM_STATUS_OK && dropped == 0,
          "console_bytes_dropped without a console is 0");
    char *text = NULL;
    CHECK_STATUS(qm_machine_forwarded_port(machine, "ssh", &text), QM_STATUS_UNSUPPORTED,
                 "forwarded_port of a machine without a vm description: QM_STATUS_UNSUPPORTED");
    CHECK_STATUS(qm_machine_vnc_socket(machine, &text), QM_STATUS_UNSUPPORTED,
                 "so is vnc_socket");
    /* A screendump is QEMU's to refuse: this machine has no display. */
    CHECK_STATUS(qm_machine_screendump(machine, "/tmp/qm-never.ppm", NULL, NULL),
                 QM_STATUS_QMP_ERROR, "screendump without a display is QEMU's error");
    CHECK(access("/tmp/qm-never.ppm", F_OK) != 0, "and leaves no file behind");

    /* Events of any name (name NULL), and patterns with null. */
    CHECK_STATUS(qm_machine_pause(machine), QM_STATUS_OK, "pause");
    CHECK_STATUS(qm_machine_resume(machine), QM_STATUS_OK, "resume");
    CHECK(qm_machine_event_wait(machine, NULL, NULL, 10000, &json) == QM_STATUS_OK && json &&
              strstr(json, "\"event\":\"STOP\""),
          "event_wait with name NULL takes the next event whatever its name (STOP)");
    qm_string_free(json);
    json = NULL;
    CHECK(qm_machine_event_wait(machine, NULL, "{\"event\": \"RESUME\"}", 10000, &json) ==
                  QM_STATUS_OK &&
              json && strstr(json, "\"event\":\"RESUME\""),
          "name NULL with a pattern naming the event");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_reset(machine), QM_STATUS_OK, "reset (system_reset)");
    CHECK(qm_machine_event_wait(machine, NULL, "{\"data\": {\"guest\": false, \"reason\": null}}",
                                10000, &json) == QM_STATUS_OK &&
              json && strstr(json, "\"event\":\"RESET\""),
          "a RESET event, matched by a pattern whose null matches anything");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_event_wait(machine, NULL, NULL, 0, NULL), QM_STATUS_TIMEOUT,
                 "nothing else is kept: name NULL with 0 is QM_STATUS_TIMEOUT");

    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "graceful shutdown");
    int32_t code = -2, sig = -2;
    CHECK_STATUS(qm_machine_exit_status(machine, &code, &sig), QM_STATUS_OK, "exit status");
    CHECK(code == 0 && sig == 0, "QEMU exited with code 0");
    char *log = NULL;
    size_t log_len = 99;
    CHECK(qm_machine_log(machine, &log, &log_len) == QM_STATUS_OK && log &&
              log_len == strlen(log),
          "the log is readable afterwards, with its length");
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
    CHECK_STATUS(qm_machine_event_wait(machine, "NEVER_SENT", NULL, 0, NULL),
                 QM_STATUS_EVENT_QUEUE_FULL, "the next event wait without a match reports it");
    CHECK_STATUS(qm_machine_event_wait(machine, "NEVER_SENT", NULL, 0, NULL), QM_STATUS_TIMEOUT,
                 "once");
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
    char log_dir[] = "/tmp/qm-c-console-XXXXXX", log_path[64];
    CHECK(mkdtemp(log_dir) != NULL, "make a dir for the console log");
    snprintf(log_path, sizeof log_path, "%s/console.log", log_dir);
    CHECK_STATUS(qm_config_set_console_log(config, log_path), QM_STATUS_OK,
                 "a console log file (which enables the console)");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch the guest fixture");
    qm_config_free(config);
    if (machine == NULL) {
        rmdir(log_dir);
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
    CHECK_STATUS(qm_machine_console_wait_for(machine, "answer=4", 30000, NULL, NULL),
                 QM_STATUS_OK, "the guest answers");
    CHECK_STATUS(qm_machine_console_wait_for(machine, "2\r\n", 30000, NULL, NULL), QM_STATUS_OK,
                 "output after a match stays readable (the rest of the answer)");
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

    /* Console bytes are returned as the guest wrote them: a NUL, a byte that is not UTF-8. */
    const char *bytes_cmd = "printf 'nul<\\000>\\377end\\n'\n";
    CHECK_STATUS(qm_machine_console_write(machine, (const uint8_t *)bytes_cmd, strlen(bytes_cmd),
                                          QM_TIMEOUT_DEFAULT, NULL),
                 QM_STATUS_OK, "make the guest print a NUL and a 0xff byte");
    before = NULL;
    before_len = 0;
    CHECK_STATUS(qm_machine_console_wait_for(machine, ">\377end", 30000, &before, &before_len),
                 QM_STATUS_OK, "wait for a pattern that is not UTF-8");
    CHECK(before && before_len > strlen(before) && before_len >= 5 &&
              memcmp(before + before_len - 5, "nul<\0", 5) == 0,
          "the output before it holds the NUL byte, and out_len counts past it");
    qm_string_free(before);

    /* console_read with a small buffer: what does not fit stays for the next call. */
    const char *read_cmd = "echo read=$((5*5))\n";
    qm_machine_console_write(machine, (const uint8_t *)read_cmd, strlen(read_cmd), -1, NULL);
    char text[8192] = {0};
    size_t text_len = 0;
    int calls = 0;
    for (int round = 0; round < 3000 && !strstr(text, "read=25"); round++) {
        size_t got = 0;
        if (qm_machine_console_read(machine, (uint8_t *)text + text_len, 3, &got) != QM_STATUS_OK ||
            text_len + 3 + 1 >= sizeof text) {
            break;
        }
        calls++;
        text_len += got;
        text[text_len] = 0;
        if (got == 0) {
            sleep_ms(10);
        }
    }
    CHECK(strstr(text, "read=25") != NULL && calls > 3,
          "console_read, 3 bytes at a time, loses nothing");
    size_t got = 1;
    while (got > 0 && qm_machine_console_read(machine, (uint8_t *)text, sizeof text, &got) ==
                          QM_STATUS_OK) {
    }
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
    FILE *log_file = fopen(log_path, "rb");
    size_t xs = 0, log_len = 0;
    static char log_text[1 << 20];
    if (log_file) {
        log_len = fread(log_text, 1, sizeof log_text, log_file);
        fclose(log_file);
    }
    for (size_t i = 0; i < log_len; i++) {
        xs += log_text[i] == 'x';
    }
    CHECK(has_bytes(log_text, log_len, "QM-GUEST-READY", 14) && xs >= 10000,
          "the console log file has every byte, those dropped from the buffer too");
    struct stat st;
    CHECK(stat(log_path, &st) == 0 && (st.st_mode & 0777) == 0600, "it is owner-only (0600)");
    const char *off = "poweroff -f\n";
    qm_machine_console_write(machine, (const uint8_t *)off, strlen(off), -1, NULL);
    CHECK_STATUS(qm_machine_wait(machine, 30000), QM_STATUS_OK, "the guest powers itself off");
    int32_t code = -2;
    CHECK_STATUS(qm_machine_exit_status(machine, &code, NULL), QM_STATUS_OK, "exit status");
    CHECK(code == 0, "QEMU exited with code 0 after the guest's poweroff");
    CHECK_STATUS(qm_machine_shutdown(machine, 1000), QM_STATUS_OK,
                 "shutdown of a QEMU that exited by itself: QM_STATUS_OK at once");
    qm_machine_free(machine);
    unlink(log_path);
    rmdir(log_dir);
}

/* The guest agent (qm_machine_guest_*) through the guest fixture with qemu-ga packed into its
 * initramfs (QM_TEST_AGENT_INITRD, booted with QM_TEST_AGENT_APPEND, which starts the agent and
 * prints QM-QGA-STARTED). */
static void check_guest_agent(void) {
    const char *kernel = getenv("QM_TEST_KERNEL");
    const char *initrd = getenv("QM_TEST_AGENT_INITRD");
    const char *append = getenv("QM_TEST_AGENT_APPEND");
    CHECK(kernel && initrd && append,
          "QM_TEST_KERNEL, QM_TEST_AGENT_INITRD, QM_TEST_AGENT_APPEND are set");
    if (!(kernel && initrd && append) || strpbrk(kernel, "\"\\") || strpbrk(initrd, "\"\\") ||
        strpbrk(append, "\"\\")) {
        return;
    }

    /* A machine without the agent's channel says so. */
    qm_machine *plain = NULL;
    CHECK_STATUS(launch_json(NONE_JSON, &plain), QM_STATUS_OK, "launch a machine without agent");
    CHECK_STATUS(qm_machine_guest_ping(plain, 1000), QM_STATUS_UNSUPPORTED,
                 "guest calls on a machine without guest_agent are QM_STATUS_UNSUPPORTED");
    qm_machine_free(plain);

    static char json[8192];
    snprintf(json, sizeof json,
             "{\"vm\": {\"memory\": \"512M\", \"kernel\": \"%s\", \"initrd\": \"%s\", "
             "\"append\": \"%s\", \"no_reboot\": true, \"guest_agent\": true}, "
             "\"accel\": \"tcg\"}",
             kernel, initrd, append);
    qm_machine *vm = NULL;
    CHECK_STATUS(launch_json(json, &vm), QM_STATUS_OK, "launch a VM with \"guest_agent\": true");
    if (vm == NULL) {
        return;
    }
    CHECK_STATUS(qm_machine_console_wait_for(vm, "QM-QGA-STARTED", 120000, NULL, NULL),
                 QM_STATUS_OK, "the guest starts its agent");
    CHECK_STATUS(qm_machine_guest_ping(vm, 120000), QM_STATUS_OK, "the guest agent answers a ping");

    char *out = NULL;
    CHECK_STATUS(qm_machine_guest_info(vm, -1, &out), QM_STATUS_OK, "guest_info");
    CHECK(out && strstr(out, "\"version\"") && strstr(out, "\"guest-exec\""),
          "guest_info is the agent's version and commands as JSON");
    qm_string_free(out);
    out = NULL;
    CHECK_STATUS(qm_machine_guest_osinfo(vm, -1, &out), QM_STATUS_OK, "guest_osinfo");
    CHECK(out && strstr(out, "\"kernel-release\"") && strstr(out, "\"machine\":\"x86_64\""),
          "guest_osinfo has the guest's kernel and machine");
    qm_string_free(out);
    out = NULL;
    CHECK_STATUS(qm_machine_guest_interfaces(vm, -1, &out), QM_STATUS_OK, "guest_interfaces");
    CHECK(out && out[0] == '[' && strstr(out, "\"name\":\"lo\"") && strstr(out, "127.0.0.1"),
          "guest_interfaces lists lo with 127.0.0.1");
    qm_string_free(out);
    out = NULL;
    CHECK_STATUS(qm_machine_guest_execute(vm, "guest-get-host-name", NULL, -1, &out),
                 QM_STATUS_OK, "guest_execute of any agent command");
    CHECK(out && strcmp(out, "{\"host-name\":\"qm-guest\"}") == 0,
          "guest_execute returns the agent's return value as JSON");
    qm_string_free(out);
    out = NULL;
    CHECK_STATUS(qm_machine_guest_execute(vm, "guest-no-such", NULL, -1, NULL),
                 QM_STATUS_QMP_ERROR, "an unknown agent command is QM_STATUS_QMP_ERROR");
    char cls[64] = {0};
    qm_last_error_qmp_class(cls, sizeof cls);
    CHECK(strcmp(cls, "CommandNotFound") == 0, "with the agent's error class");
    CHECK_STATUS(qm_machine_guest_execute(vm, "guest-ping", "[1]", -1, NULL),
                 QM_STATUS_INVALID_JSON, "guest_execute arguments that are not an object");
    CHECK_STATUS(qm_machine_guest_execute(vm, "guest-shutdown", NULL, -1, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "guest-shutdown is not run through guest_execute");

    /* exec: input, stdout with a NUL, stderr, exit code; a signal; bad argv. */
    const char *script = "[\"/bin/sh\", \"-c\", \"cat; echo e >&2; printf 'a\\\\000b'; exit 5\"]";
    int64_t code = 99;
    int32_t sig = 99;
    char *sout = NULL, *serr = NULL;
    size_t sout_len = 0, serr_len = 0;
    CHECK_STATUS(qm_machine_guest_exec(vm, script, (const uint8_t *)"in\n", 3, 60000, &code, &sig,
                                       &sout, &sout_len, &serr, &serr_len),
                 QM_STATUS_OK, "guest_exec runs a program");
    CHECK(code == 5 && sig == 0, "guest_exec gives its exit code");
    CHECK(sout && sout_len == 6 && memcmp(sout, "in\na\0b", 6) == 0 && sout[6] == 0,
          "guest_exec gives its stdout as written (a NUL too) with its length");
    CHECK(serr && serr_len == 2 && strcmp(serr, "e\n") == 0, "guest_exec gives its stderr");
    qm_string_free(sout);
    qm_string_free(serr);
    CHECK_STATUS(qm_machine_guest_exec(vm, "[\"/bin/sh\", \"-c\", \"kill -9 $$\"]", NULL, 0, 60000,
                                       &code, &sig, NULL, NULL, NULL, NULL),
                 QM_STATUS_OK, "guest_exec of a program that is killed");
    CHECK(code == -1 && sig == 9, "guest_exec gives -1 and the signal");
    CHECK_STATUS(qm_machine_guest_exec(vm, "[]", NULL, 0, -1, NULL, NULL, NULL, NULL, NULL, NULL),
                 QM_STATUS_INVALID_JSON, "guest_exec with an empty argv");
    CHECK_STATUS(qm_machine_guest_exec(vm, NULL, NULL, 0, -1, NULL, NULL, NULL, NULL, NULL, NULL),
                 QM_STATUS_NULL_ARGUMENT, "guest_exec with a NULL argv");
    CHECK_STATUS(qm_machine_guest_exec(vm, "[\"/no/such/program\"]", NULL, 0, -1, NULL, NULL,
                                       NULL, NULL, NULL, NULL),
                 QM_STATUS_QMP_ERROR, "guest_exec of a missing program is the agent's error");

    /* Copies both ways, byte-exact, through temp files. */
    char dir[] = "/tmp/qm-c-guest-XXXXXX", src[64], back[64];
    CHECK(mkdtemp(dir) != NULL, "make a dir for the copies");
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(back, sizeof back, "%s/back", dir);
    size_t size = (1 << 20) + 3;
    unsigned char *data = malloc(size);
    for (size_t i = 0; data && i < size; i++) {
        data[i] = (unsigned char)((i * 2654435761u) >> 13);
    }
    FILE *f = fopen(src, "wb");
    if (f && data) {
        fwrite(data, 1, size, f);
        fclose(f);
    }
    uint64_t copied = 0;
    CHECK_STATUS(qm_machine_guest_copy_in(vm, src, "/tmp/c-blob", -1, &copied), QM_STATUS_OK,
                 "guest_copy_in of 1 MiB + 3 bytes");
    CHECK(copied == size, "guest_copy_in reports the bytes copied");
    copied = 0;
    CHECK_STATUS(qm_machine_guest_copy_out(vm, "/tmp/c-blob", back, 60000, &copied), QM_STATUS_OK,
                 "guest_copy_out of it");
    CHECK(copied == size, "guest_copy_out reports the bytes copied");
    unsigned char *again = malloc(size + 1);
    size_t again_len = 0;
    f = fopen(back, "rb");
    if (f && again) {
        again_len = fread(again, 1, size + 1, f);
        fclose(f);
    }
    CHECK(data && again && again_len == size && memcmp(data, again, size) == 0,
          "the file came back byte-exact");
    struct stat st;
    CHECK(stat(back, &st) == 0 && (st.st_mode & 0777) == 0600,
          "the host file guest_copy_out made is owner-only (0600)");
    free(data);
    free(again);
    CHECK_STATUS(qm_machine_guest_copy_out(vm, "/tmp/no-such-file", back, -1, NULL),
                 QM_STATUS_QMP_ERROR, "guest_copy_out of a missing file is the agent's error");
    CHECK_STATUS(qm_machine_guest_copy_in(vm, "/nonexistent/host/file", "/tmp/x", -1, NULL),
                 QM_STATUS_IO, "guest_copy_in of a host file that cannot be opened is QM_STATUS_IO");
    unlink(src);
    unlink(back);
    rmdir(dir);

    /* 0 does not wait: the answer counts only if it is already there when the library
     * looks (a fast agent can manage that), so either status is right; anything else is not.
     * Either way the next call resynchronizes and works. */
    {
        enum qm_status st = qm_machine_guest_ping(vm, 0);
        CHECK(st == QM_STATUS_TIMEOUT || st == QM_STATUS_OK,
              "guest_ping with 0 does not wait: QM_STATUS_TIMEOUT, or OK if the answer was there");
    }
    CHECK_STATUS(qm_machine_guest_ping(vm, 60000), QM_STATUS_OK,
                 "the next call resynchronizes with the agent");

    /* Shutdown: a bad mode, then a power-down with the events that follow. */
    CHECK_STATUS(qm_machine_guest_shutdown(vm, "sideways", -1), QM_STATUS_INVALID_ARGUMENT,
                 "guest_shutdown with an unknown mode");
    CHECK_STATUS(qm_machine_guest_shutdown(vm, "powerdown", 60000), QM_STATUS_OK,
                 "guest_shutdown powerdown (the agent answers nothing on success)");
    CHECK_STATUS(qm_machine_event_wait(vm, "SHUTDOWN", "{\"data\": {\"guest\": true}}", 60000,
                                       NULL),
                 QM_STATUS_OK, "QEMU reports SHUTDOWN from the guest");
    CHECK_STATUS(qm_machine_wait(vm, 60000), QM_STATUS_OK, "QEMU exits after the power-down");
    int32_t exit_code = -2;
    qm_machine_exit_status(vm, &exit_code, NULL);
    CHECK(exit_code == 0, "with status 0");
    CHECK_STATUS(qm_machine_guest_ping(vm, 1000), QM_STATUS_PROCESS_EXITED,
                 "a guest call after QEMU exited is QM_STATUS_PROCESS_EXITED");
    qm_machine_free(vm);
}

static double max_progress = -1.0;
static int progress_calls;
static int progress_elsewhere;
static pthread_t progress_caller;

static void on_progress(double fraction, void *user_data) {
    CHECK(user_data == &progress_calls, "the progress callback gets its user data");
    progress_elsewhere += !pthread_equal(pthread_self(), progress_caller);
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
    CHECK_STATUS(qm_image_resize(qcow, 96ull << 20, true), QM_STATUS_OK,
                 "shrinking with allow_shrink");
    CHECK(qm_image_info(qcow, &json) == QM_STATUS_OK && json &&
              strstr(json, "\"virtual-size\":100663296"),
          "it is 96 MiB now");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_image_resize(qcow, 128ull << 20, false), QM_STATUS_OK, "grow back to 128 MiB");
    progress_caller = pthread_self();
    CHECK_STATUS(qm_image_convert(qcow, raw, "raw", on_progress, &progress_calls), QM_STATUS_OK,
                 "convert to raw with progress");
    CHECK(progress_calls > 0 && max_progress == 1.0, "progress reached 1.0");
    CHECK(progress_elsewhere == 0, "the progress callback ran on the calling thread");
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
    CHECK_STATUS(qm_image_resize(qcow, 1ull << 60, false), QM_STATUS_IMAGE,
                 "growing past the file system's free space is refused: QM_STATUS_IMAGE");

    /* A path that is not UTF-8. */
    char odd[256];
    snprintf(odd, sizeof odd, "%s/\xff\xfe.qcow2", dir);
    CHECK_STATUS(qm_image_create(odd, "qcow2", 1 << 20), QM_STATUS_OK,
                 "create an image at a path that is not UTF-8");
    CHECK(access(odd, F_OK) == 0, "it is there, under that name");
    CHECK(qm_image_info(odd, &json) == QM_STATUS_OK && json && strstr(json, "\"format\":\"qcow2\""),
          "and its info can be read");
    qm_string_free(json);
    json = NULL;

    /* qemu-img failing: a file that claims to be qcow2 and is not. */
    char broken[256];
    snprintf(broken, sizeof broken, "%s/broken.qcow2", dir);
    FILE *f = fopen(broken, "wb");
    if (f) {
        fwrite("QFI\xfb\x00\x00\x00\x07garbage", 1, 15, f);
        fclose(f);
    }
    CHECK_STATUS(qm_image_info(broken, &json), QM_STATUS_IMAGE,
                 "info of a broken image is QM_STATUS_IMAGE");
    CHECK(strstr(last_error(), "qemu-img") != NULL && strstr(last_error(), "broken.qcow2") != NULL,
          "  the message holds qemu-img's command line");
    f = fopen(raw, "wb");
    if (f) {
        fputs("keep me", f);
        fclose(f);
    }
    CHECK(qm_image_convert(broken, raw, "raw", NULL, NULL) != QM_STATUS_OK,
          "converting the broken image fails");
    char kept[16] = {0};
    f = fopen(raw, "rb");
    if (f) {
        if (fread(kept, 1, sizeof kept - 1, f) == 0) {
            kept[0] = 0;
        }
        fclose(f);
    }
    CHECK(strcmp(kept, "keep me") == 0, "and leaves the existing destination as it was");
    /* No qemu-img to be found. */
    const char *old_path = getenv("PATH");
    char *saved = old_path ? strdup(old_path) : NULL;
    setenv("PATH", "/nonexistent", 1);
    CHECK_STATUS(qm_image_info(odd, &json), QM_STATUS_BINARY_NOT_FOUND,
                 "without qemu-img in PATH: QM_STATUS_BINARY_NOT_FOUND");
    CHECK(strstr(last_error(), "qemu-img") != NULL, "  naming qemu-img");
    if (saved) {
        setenv("PATH", saved, 1);
        free(saved);
    }
    unlink(broken);
    unlink(odd);
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
    CHECK_STATUS(qm_config_from_json("{\"display_none\": false, \"vm\": {}}", &config),
                 QM_STATUS_INVALID_JSON, "display_none together with vm is rejected");
    /* Launch settings apply to a VM as to a raw command line. */
    const char *shared[] = {"\"console_buffer_bytes\": 4096", "\"max_events\": 1",
                            "\"oob\": false", "\"qmp_ids\": true"};
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        char text[128];
        qm_config *ok = NULL;
        snprintf(text, sizeof text, "{%s, \"vm\": {}}", shared[i]);
        CHECK_STATUS(qm_config_from_json(text, &ok), QM_STATUS_OK, text);
        qm_config_free(ok);
    }
    CHECK_STATUS(qm_config_from_json("{\"vm\": []}", &config), QM_STATUS_INVALID_JSON,
                 "a vm that is not an object is rejected");
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
    CHECK_STATUS(qm_machine_screendump(machine, "/tmp/qm-\xff.ppm", "ppm", NULL),
                 QM_STATUS_INVALID_ARGUMENT, "a screenshot path that is not UTF-8 is refused");
    CHECK(strstr(last_error(), "UTF-8") != NULL, "  QMP cannot carry it, the message says");
    char shot2[] = "/tmp/qm-c-shot-XXXXXX";
    CHECK(mkdtemp(shot2) != NULL, "temp dir for another screenshot");
    snprintf(shot_path, sizeof shot_path, "%s/screen.png", shot2);
    written = NULL;
    CHECK_STATUS(qm_machine_screendump(machine, shot_path, NULL, &written), QM_STATUS_OK,
                 "screendump in the best format this QEMU has (format NULL)");
    char head[8] = {0};
    f = written ? fopen(written, "rb") : NULL;
    size_t head_len = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) {
        fclose(f);
    }
    size_t wlen = written ? strlen(written) : 0;
    CHECK(head_len >= 4 &&
              ((memcmp(head, "\x89PNG", 4) == 0 && strcmp(written, shot_path) == 0) ||
               (memcmp(head, "P6", 2) == 0 && wlen > 4 && strcmp(written + wlen - 4, ".ppm") == 0)),
          "a PNG at the path asked for, or a PPM named .ppm");
    if (written) {
        unlink(written);
    }
    qm_string_free(written);
    rmdir(shot2);
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "shut the vm down");
    qm_machine_free(machine);
    machine = NULL;
    CHECK_STATUS(launch_json("{\"accel\": \"tcg\", \"vm\": {\"memory\": \"64M\"}}", &machine),
                 QM_STATUS_OK, "launch a vm description without VNC");
    CHECK_STATUS(qm_machine_vnc_socket(machine, &vnc), QM_STATUS_UNSUPPORTED,
                 "its vnc_socket is QM_STATUS_UNSUPPORTED");
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
    int32_t code = -2, sig = -2;
    CHECK(qm_machine_exit_status(machine, &code, &sig) == QM_STATUS_OK && code == -1 &&
              sig == SIGKILL,
          "kill: SIGKILL, reaped (code -1, signal 9)");
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

/* qemu-img's exit status decides what image calls return: it must arrive whatever the program
 * does with SIGCHLD (qemu-img is the guardian's child, not the program's). */
static void check_qemu_img_status(const char *when) {
    char dir[] = "/tmp/qm-c-img-status-XXXXXX", path[64], what[160];
    if (mkdtemp(dir) == NULL) {
        CHECK(0, "make a scratch dir");
        return;
    }
    snprintf(path, sizeof path, "%s/disk.qcow2", dir);
    snprintf(what, sizeof what, "qemu-img's success is seen %s", when);
    CHECK_STATUS(qm_image_create(path, "qcow2", 1 << 20), QM_STATUS_OK, what);
    char *json = NULL;
    FILE *f = fopen(path, "r+b");
    if (f) {
        fputs("QFI\xfb broken", f); /* qemu-img info fails on this */
        fclose(f);
    }
    snprintf(what, sizeof what, "qemu-img's failure is seen %s", when);
    CHECK_STATUS(qm_image_info(path, &json), QM_STATUS_IMAGE, what);
    unlink(path);
    rmdir(dir);
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
    check_qemu_img_status("with SIGCHLD ignored");
    sigaction(SIGCHLD, &old, NULL);
}

/* ---- the rules at the top of the header --------------------------------------------------- */

/* Field `n` (numbered as in proc(5): 4 is the parent, 5 the process group) of
 * /proc/<pid>/stat, or -1. */
static long stat_field(long pid, int n) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')');
    if (!p || n < 4) {
        return -1;
    }
    p += 2; /* field 3, the state */
    for (int field = 3; field < n; field++) {
        p = strchr(p, ' ');
        if (!p) {
            return -1;
        }
        p++;
    }
    return strtol(p, NULL, 10);
}

/* Waits (up to 10 s) until `pid` is gone, reaped by its parent; true if it is. */
static int wait_gone(long pid) {
    for (int i = 0; i < 2000; i++) {
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            return 1;
        }
        sleep_ms(5);
    }
    return 0;
}

/* Waits (up to 10 s) until no live process has `marker` in its command line. */
static int wait_unmarked(const char *marker) {
    for (int i = 0; i < 2000; i++) {
        if (count_marked(marker) == 0) {
            return 1;
        }
        sleep_ms(5);
    }
    return 0;
}

/* Entries of a directory (without . and ..), or -1. */
static int dir_entries(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

/* The threads of this process. */
static int count_tasks(void) {
    return dir_entries("/proc/self/task");
}

/* True if `needle` (`n` bytes) occurs in `hay` (`len` bytes). */
static int has_bytes(const char *hay, size_t len, const char *needle, size_t n) {
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(hay + i, needle, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* True if `s` is valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). */
static int valid_utf8(const unsigned char *s) {
    while (*s) {
        unsigned c = *s;
        int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (extra < 0) {
            return 0;
        }
        unsigned long cp = extra == 0 ? c : c & (0x3F >> extra);
        for (int i = 1; i <= extra; i++) {
            if ((s[i] & 0xC0) != 0x80) {
                return 0;
            }
            cp = cp << 6 | (s[i] & 0x3F);
        }
        static const unsigned long min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return 0;
        }
        s += extra + 1;
    }
    return 1;
}

/* Stream progress: bytes read grow, the conversion's fraction grows to 1.0. */
static uint64_t stream_read;
static double stream_converted = -1.0;
static int stream_calls;

static void on_stream_progress(uint64_t bytes_read, double converted, void *user_data) {
    CHECK(user_data == &stream_calls, "the stream progress callback gets its user data");
    if (bytes_read < stream_read || converted < stream_converted) {
        printf("FAIL stream progress went backwards: %llu/%f after %llu/%f\n",
               (unsigned long long)bytes_read, converted, (unsigned long long)stream_read,
               stream_converted);
        failures++;
    }
    stream_read = bytes_read;
    stream_converted = converted;
    stream_calls++;
}

/* Writes `len` bytes of `fill` with `marker` at offset 4096 to `path`. */
static int write_image(const char *path, size_t len, int fill, const char *marker) {
    char *data = malloc(len);
    if (!data) {
        return 0;
    }
    memset(data, fill, len);
    memcpy(data + 4096, marker, strlen(marker));
    FILE *f = fopen(path, "wb");
    size_t n = f ? fwrite(data, 1, len, f) : 0;
    if (f) {
        fclose(f);
    }
    free(data);
    return n == len;
}

/* Whether the file at `path` holds `marker` at offset 4096. */
static int has_marker(const char *path, const char *marker) {
    char buf[64] = {0};
    FILE *f = fopen(path, "rb");
    int ok = f && fseek(f, 4096, SEEK_SET) == 0 && fread(buf, 1, strlen(marker), f) == strlen(marker);
    if (f) {
        fclose(f);
    }
    return ok && memcmp(buf, marker, strlen(marker)) == 0;
}

/* A pipe whose read end holds `len` bytes of an image with `marker` (small enough for the
 * pipe's buffer) and end-of-file. Returns the read end, or -1. */
static int image_pipe(size_t len, const char *marker) {
    int fds[2];
    if (pipe(fds) != 0) {
        return -1;
    }
    char *data = calloc(1, len);
    if (!data) {
        return -1;
    }
    memcpy(data + 4096, marker, strlen(marker));
    ssize_t n = write(fds[1], data, len);
    free(data);
    close(fds[1]);
    if (n != (ssize_t)len) {
        close(fds[0]);
        return -1;
    }
    return fds[0];
}

/* A writer that sends an image through a pipe only after a while, so that a reader of the
 * pipe's non-blocking end finds it empty first. */
struct late_write {
    int fd;
    size_t len;
};

static void *write_late(void *arg) {
    struct late_write *lw = arg;
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    char *data = calloc(1, lw->len);
    if (data) {
        memcpy(data + 4096, "QM-LATE", 7);
        size_t off = 0;
        while (off < lw->len) {
            ssize_t n = write(lw->fd, data + off, lw->len - off);
            if (n <= 0) {
                break;
            }
            off += (size_t)n;
        }
        free(data);
    }
    close(lw->fd);
    return NULL;
}

/* What Jumpstarter's QEMU driver uses: flashing images and streams, default partitions given
 * as files, flashed and dumped by name, the power state and its changes, a relaunch with a
 * changed description, vsock. */
static void check_driver(void) {
    char dir[] = "/tmp/qm-c-driver-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "make a temp dir for the driver checks");
    char base[256], source[256], target[256], dumped[256];
    snprintf(base, sizeof base, "%s/base.raw", dir);
    snprintf(source, sizeof source, "%s/source.raw", dir);
    snprintf(target, sizeof target, "%s/target.qcow2", dir);
    snprintf(dumped, sizeof dumped, "%s/dumped.raw", dir);
    CHECK(write_image(base, 1 << 20, 0, "QM-BASE") && write_image(source, 1 << 20, 7, "QM-SOURCE"),
          "write two raw images");

    /* Images: from a file, and from a pipe. */
    max_progress = -1.0;
    progress_calls = 0;
    CHECK_STATUS(qm_image_flash(source, target, "qcow2", on_progress, &progress_calls),
                 QM_STATUS_OK, "qm_image_flash a raw file into a new qcow2");
    CHECK(progress_calls > 0 && max_progress == 1.0, "  its progress reached 1.0");
    char *json = NULL;
    CHECK(qm_image_info(target, &json) == QM_STATUS_OK && json && strstr(json, "\"qcow2\""),
          "  the target is a qcow2");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_image_flash(target, dumped, NULL, NULL, NULL), QM_STATUS_OK,
                 "qm_image_flash it back into a new raw file (format NULL)");
    CHECK(has_marker(dumped, "QM-SOURCE"), "  the data came back");
    CHECK_STATUS(qm_image_flash("/nonexistent/qm.img", target, NULL, NULL, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "flashing a missing source is refused");
    /* A compressed source, recognised by its content (the name says nothing). */
    char packed[300], cmd[700];
    snprintf(packed, sizeof packed, "%s/packed.img", dir);
    snprintf(cmd, sizeof cmd, "gzip -c '%s' > '%s'", source, packed);
    CHECK(system(cmd) == 0, "gzip the source (gzip is installed)");
    CHECK_STATUS(qm_image_flash(packed, dumped, "raw", NULL, NULL), QM_STATUS_OK,
                 "qm_image_flash a gzip-compressed source");
    CHECK(has_marker(dumped, "QM-SOURCE"), "  it was decompressed");
    /* A source qemu-img cannot read: the flash fails, the target stays as it was. */
    static const char broken[8] = {'Q', 'F', 'I', (char)0xfb, 0, 0, 0, 99};
    FILE *bf = fopen(packed, "wb");
    CHECK(bf && fwrite(broken, 1, sizeof broken, bf) == sizeof broken && fclose(bf) == 0,
          "write a broken qcow2 header");
    CHECK_STATUS(qm_image_flash(packed, dumped, "raw", NULL, NULL), QM_STATUS_IMAGE,
                 "flashing an image qemu-img cannot read is QM_STATUS_IMAGE");
    CHECK(has_marker(dumped, "QM-SOURCE"), "  the target was not replaced");
    unlink(packed);
    int fd = image_pipe(48 << 10, "QM-FROM-PIPE");
    stream_read = 0;
    stream_converted = -1.0;
    stream_calls = 0;
    CHECK_STATUS(qm_image_flash_fd(fd, target, NULL, on_stream_progress, &stream_calls),
                 QM_STATUS_OK, "qm_image_flash_fd from a pipe into the qcow2");
    CHECK(stream_calls > 0 && stream_read == (48 << 10) && stream_converted == 1.0,
          "  its progress counts the bytes read, then the conversion to 1.0");
    CHECK(fcntl(fd, F_GETFD) != -1, "  the caller's descriptor stays open");
    close(fd);
    {
        int p[2];
        CHECK(pipe(p) == 0 && fcntl(p[0], F_SETFL, O_NONBLOCK) == 0,
              "a pipe whose read end is non-blocking");
        struct late_write lw = {p[1], 48 << 10};
        pthread_t writer;
        CHECK(pthread_create(&writer, NULL, write_late, &lw) == 0,
              "a thread that writes an image into it 200 ms later");
        char late[300];
        snprintf(late, sizeof late, "%s/late.raw", dir);
        CHECK_STATUS(qm_image_flash_fd(p[0], late, "raw", NULL, NULL), QM_STATUS_OK,
                     "qm_image_flash_fd waits on a non-blocking descriptor until its data comes");
        pthread_join(writer, NULL);
        close(p[0]);
        CHECK(has_marker(late, "QM-LATE"), "  the image came through whole");
        unlink(late);
    }
    CHECK_STATUS(qm_image_flash_fd(-1, target, NULL, NULL, NULL), QM_STATUS_INVALID_ARGUMENT,
                 "qm_image_flash_fd with -1 is refused");
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    CHECK_STATUS(qm_image_flash_fd(fd, dumped, "raw", NULL, NULL), QM_STATUS_IO,
                 "qm_image_flash_fd from a descriptor that cannot be read is QM_STATUS_IO");
    close(fd);
    CHECK(has_marker(dumped, "QM-SOURCE"), "  the target was not replaced");

    /* A raw launch (no `vm` description) has no drives to flash. */
    qm_machine *raw = NULL;
    CHECK_STATUS(launch_json("{\"args\": [\"-machine\", \"none\", \"-nodefaults\", \"-S\"]}", &raw),
                 QM_STATUS_OK, "launch a raw machine");
    if (raw != NULL) {
        int32_t raw_state = -1;
        CHECK(qm_machine_power_state(raw, &raw_state) == QM_STATUS_OK &&
                  raw_state == QM_POWER_PAUSED,
              "  a raw machine started with -S is QM_POWER_PAUSED");
        CHECK(qm_machine_drives(raw, &json) == QM_STATUS_OK && json && strcmp(json, "[]") == 0,
              "  qm_machine_drives of a raw launch is []");
        qm_string_free(json);
        json = NULL;
        CHECK_STATUS(qm_machine_flash(raw, "root", source, NULL, NULL), QM_STATUS_UNSUPPORTED,
                     "  qm_machine_flash of a raw launch is QM_STATUS_UNSUPPORTED");
        qm_status sd = qm_machine_shutdown(raw, 10000);
        CHECK(sd == QM_STATUS_OK || sd == QM_STATUS_NOT_GRACEFUL, "  shut it down");
        CHECK_STATUS(qm_machine_dump(raw, "root", dumped, NULL, NULL, NULL),
                     QM_STATUS_UNSUPPORTED, "  qm_machine_dump of a raw launch is unsupported");
        CHECK_STATUS(qm_machine_relaunch(raw, "{}"), QM_STATUS_UNSUPPORTED,
                     "  qm_machine_relaunch with a description of a raw launch is unsupported");
        qm_machine_free(raw);
    }

    /* A VM whose root disk starts from a file (its own overlay), with UEFI from the profile. */
    qm_machine *machine = NULL;
    char desc[1024];
    snprintf(desc, sizeof desc,
             "{\"accel\": \"tcg\", \"temp_dir\": \"%s\", \"vm\": {\"paused\": true,"
             " \"default_partitions\": {\"root\": \"%s\"}, \"disk_size\": \"4M\"}}",
             dir, base);
    CHECK_STATUS(launch_json(desc, &machine), QM_STATUS_OK,
                 "launch with a default partition file for root");
    if (machine == NULL) {
        return;
    }
    int32_t state = -1;
    CHECK_STATUS(qm_machine_power_state(machine, &state), QM_STATUS_OK, "qm_machine_power_state");
    CHECK(state == QM_POWER_PAUSED, "  a machine started paused is QM_POWER_PAUSED");
    CHECK_STATUS(qm_machine_power_wait_change(machine, 0, &state), QM_STATUS_TIMEOUT,
                 "no change yet: qm_machine_power_wait_change with 0 times out");
    CHECK_STATUS(qm_machine_resume(machine), QM_STATUS_OK, "resume");
    CHECK_STATUS(qm_machine_power_wait_change(machine, 10000, &state), QM_STATUS_OK,
                 "the resume is a change");
    CHECK(state == QM_POWER_RUNNING, "  to QM_POWER_RUNNING");
    CHECK_STATUS(qm_machine_drives(machine, &json), QM_STATUS_OK, "qm_machine_drives");
    CHECK(json && strstr(json, "\"name\":\"root\"") && strstr(json, "\"name\":\"uefi_code\"") &&
              strstr(json, "\"name\":\"uefi_vars\"") && strstr(json, "\"size\":4194304"),
          "  root, uefi_code and uefi_vars, root kept at 4 MiB");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_flash(machine, "root", source, NULL, NULL), QM_STATUS_INVALID_STATE,
                 "flashing while QEMU runs is QM_STATUS_INVALID_STATE");
    CHECK_STATUS(qm_machine_dump(machine, "root", dumped, NULL, NULL, NULL),
                 QM_STATUS_INVALID_STATE, "dumping while QEMU runs is QM_STATUS_INVALID_STATE");
    qm_status down = qm_machine_shutdown(machine, 10000);
    CHECK(down == QM_STATUS_OK || down == QM_STATUS_NOT_GRACEFUL, "shut it down");
    CHECK_STATUS(qm_machine_power_wait_change(machine, 10000, &state), QM_STATUS_OK,
                 "QEMU's exit is a change");
    CHECK(state == QM_POWER_OFF, "  to QM_POWER_OFF");
    CHECK_STATUS(qm_machine_power_wait_change(machine, 10000, &state), QM_STATUS_PROCESS_EXITED,
                 "after QM_POWER_OFF and the exit nothing can change: QM_STATUS_PROCESS_EXITED");
    state = -1;
    CHECK(qm_machine_power_state(machine, &state) == QM_STATUS_OK && state == QM_POWER_OFF,
          "  qm_machine_power_state of an exited QEMU is QM_POWER_OFF");

    CHECK_STATUS(qm_machine_dump(machine, "root", dumped, "raw", NULL, NULL), QM_STATUS_OK,
                 "qm_machine_dump root as raw");
    CHECK(has_marker(dumped, "QM-BASE"), "  it holds the default image's data");
    CHECK_STATUS(qm_machine_flash(machine, "root", source, on_progress, &progress_calls),
                 QM_STATUS_OK, "qm_machine_flash root from a file");
    CHECK_STATUS(qm_machine_dump(machine, "root", dumped, NULL, NULL, NULL), QM_STATUS_OK,
                 "dump root again (its own format)");
    fd = image_pipe(48 << 10, "QM-FLASHED-FD");
    stream_read = 0;
    stream_converted = -1.0;
    CHECK_STATUS(qm_machine_flash_fd(machine, "OVMF_VARS.fd", fd, on_stream_progress,
                                     &stream_calls),
                 QM_STATUS_OK, "qm_machine_flash_fd the UEFI variables (Jumpstarter's name)");
    close(fd);
    CHECK(stream_converted == 1.0, "  the stream flash ends at 1.0");
    CHECK_STATUS(qm_machine_dump(machine, "uefi_vars", dumped, "raw", on_progress,
                                 &progress_calls),
                 QM_STATUS_OK, "dump the variables by their drive name");
    CHECK(has_marker(dumped, "QM-FLASHED-FD"), "  they hold what the stream had");
    CHECK(has_marker(base, "QM-BASE"), "the default root image was never written");
    CHECK_STATUS(qm_machine_flash(machine, "boot", source, NULL, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "an unknown partition is refused");
    CHECK(strstr(last_error(), "root") != NULL, "  the message lists the drives");
    CHECK_STATUS(qm_machine_flash(machine, "root", "/nonexistent/qm.img", NULL, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "a missing source is refused");
    CHECK_STATUS(qm_machine_flash_fd(machine, "root", -1, NULL, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "qm_machine_flash_fd with -1 is refused");
    CHECK_STATUS(qm_machine_dump(machine, "root", dumped, "no format!", NULL, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "an unknown dump format is refused");

    /* Relaunch: the same description, then a changed one that keeps the disks. */
    CHECK_STATUS(qm_machine_relaunch(machine, NULL), QM_STATUS_OK, "qm_machine_relaunch(NULL)");
    CHECK(qm_machine_power_state(machine, &state) == QM_STATUS_OK && state == QM_POWER_PAUSED,
          "  paused again");
    CHECK_STATUS(qm_machine_relaunch(machine, NULL), QM_STATUS_INVALID_STATE,
                 "relaunch while QEMU runs is QM_STATUS_INVALID_STATE");
    down = qm_machine_shutdown(machine, 10000);
    CHECK(down == QM_STATUS_OK || down == QM_STATUS_NOT_GRACEFUL, "shut it down again");
    snprintf(desc, sizeof desc,
             "{\"paused\": true, \"memory\": \"192M\", \"default_partitions\": {\"root\": \"%s\"},"
             " \"disk_size\": \"8M\"}",
             base);
    CHECK_STATUS(qm_machine_relaunch(machine, desc), QM_STATUS_OK,
                 "qm_machine_relaunch with more memory and a bigger disk_size");
    CHECK(qm_machine_drives(machine, &json) == QM_STATUS_OK && json &&
              strstr(json, "\"size\":8388608"),
          "  root is kept at 8 MiB now");
    qm_string_free(json);
    json = NULL;
    down = qm_machine_shutdown(machine, 10000);
    CHECK(down == QM_STATUS_OK || down == QM_STATUS_NOT_GRACEFUL, "shut it down");
    CHECK_STATUS(qm_machine_dump(machine, "root", dumped, "raw", NULL, NULL), QM_STATUS_OK,
                 "dump root after the relaunch");
    CHECK(has_marker(dumped, "QM-SOURCE"), "  the flashed data was kept");
    snprintf(desc, sizeof desc,
             "{\"default_partitions\": {\"root\": \"%s\"}, \"disk_size\": \"2M\"}", base);
    CHECK_STATUS(qm_machine_relaunch(machine, desc), QM_STATUS_INVALID_ARGUMENT,
                 "a disk_size below the disk's image is refused");
    CHECK(strstr(last_error(), "2097152 bytes") && strstr(last_error(), "8388608 bytes"),
          "  the message names both sizes");
    CHECK(qm_machine_drives(machine, &json) == QM_STATUS_OK && json &&
              strstr(json, "\"size\":8388608"),
          "  the refused relaunch left the description as it was");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_relaunch(machine, "{\"memroy\": 1}"), QM_STATUS_INVALID_JSON,
                 "a description that does not parse is QM_STATUS_INVALID_JSON");
    uint32_t cid = 7;
    CHECK_STATUS(qm_machine_vsock_cid(machine, &cid), QM_STATUS_UNSUPPORTED,
                 "qm_machine_vsock_cid without vsock is QM_STATUS_UNSUPPORTED");
    qm_machine_free(machine);
    machine = NULL;

    /* vsock needs /dev/vhost-vsock (this test host may have none). */
    int usable = access("/dev/vhost-vsock", R_OK | W_OK) == 0;
    qm_status s = launch_json("{\"accel\": \"tcg\", \"vm\": {\"vsock\": true}}", &machine);
    if (usable) {
        CHECK(s == QM_STATUS_OK, "with /dev/vhost-vsock, a vsock VM launches");
        CHECK(qm_machine_vsock_cid(machine, &cid) == QM_STATUS_OK && cid > 2 && cid != 0xFFFFFFFFu,
              "  with a CID a guest may have");
    } else {
        CHECK(s == QM_STATUS_UNSUPPORTED && strstr(last_error(), "/dev/vhost-vsock"),
              "without /dev/vhost-vsock, vsock is QM_STATUS_UNSUPPORTED naming the device");
    }
    qm_machine_free(machine);

    unlink(base);
    unlink(source);
    unlink(target);
    unlink(dumped);
    CHECK(rmdir(dir) == 0, "nothing else was left in the driver checks' temp dir");
}

static qm_status launch_json(const char *json, qm_machine **out) {
    qm_config *config = NULL;
    qm_status s = qm_config_from_json(json, &config);
    if (s == QM_STATUS_OK) {
        s = qm_machine_launch(config, out);
    }
    qm_config_free(config);
    return s;
}

static int32_t pid_of(qm_machine *machine) {
    int32_t pid = 0;
    qm_machine_pid(machine, &pid);
    return pid;
}

/* What the program's signal handling and threads were at the start, to compare at the end. */
#define MAX_SIGNAL 64
static struct sigaction baseline_actions[MAX_SIGNAL + 1];
static sigset_t baseline_mask;
static int baseline_tasks;

static void record_baseline(void) {
    memset(baseline_actions, 0, sizeof baseline_actions);
    for (int s = 1; s <= MAX_SIGNAL; s++) {
        sigaction(s, NULL, &baseline_actions[s]);
    }
    pthread_sigmask(SIG_SETMASK, NULL, &baseline_mask);
    baseline_tasks = count_tasks();
}

static void check_signals_and_threads_untouched(void) {
    int actions_same = 1, mask_same = 1;
    sigset_t mask;
    pthread_sigmask(SIG_SETMASK, NULL, &mask);
    for (int s = 1; s <= MAX_SIGNAL; s++) {
        struct sigaction now;
        memset(&now, 0, sizeof now);
        sigaction(s, NULL, &now);
        /* glibc adds SA_RESTORER (0x04000000) to any disposition set through it, as this
         * program's own checks do (and undo): not a change. */
        if (now.sa_handler != baseline_actions[s].sa_handler ||
            (now.sa_flags & ~0x04000000) != (baseline_actions[s].sa_flags & ~0x04000000)) {
            printf("     signal %d: disposition changed\n", s);
            actions_same = 0;
        }
        if (s != 32 && s != 33 && sigismember(&mask, s) != sigismember(&baseline_mask, s)) {
            mask_same = 0;
        }
    }
    CHECK(actions_same, "the library installed no signal handler, changed no disposition");
    CHECK(mask_same, "and left the signal mask as it was");
    CHECK(count_tasks() == baseline_tasks, "no thread of the library is left (it starts none)");
}

static void check_guardian(void) {
    CHECK(qm_guardian_pid() == 0, "no guardian before the first launch or qm_guardian_start()");
    int32_t pid = 0;
    CHECK_STATUS(qm_guardian_start(&pid), QM_STATUS_OK, "qm_guardian_start");
    CHECK(pid > 0 && qm_guardian_pid() == pid, "qm_guardian_pid() gives the guardian's pid");
    CHECK(stat_field(pid, 4) == (long)getpid(), "the guardian is a child of the program");
    CHECK(stat_field(pid, 5) == pid && pid != getpgrp(),
          "it leads a process group of its own (when qm_guardian_start() returns)");
    int status;
    CHECK(waitpid(pid, &status, WNOHANG) == 0, "waitpid() on it: a running child of ours");
    /* It names itself first thing after the fork: look until it has (up to 10 s). */
    char path[64], comm[32] = {0};
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    for (int i = 0; i < 2000 && strcmp(comm, "qm-guardian\n") != 0; i++) {
        FILE *f = fopen(path, "r");
        memset(comm, 0, sizeof comm);
        if (f) {
            if (fgets(comm, sizeof comm, f) == NULL) {
                comm[0] = 0;
            }
            fclose(f);
        }
        if (strcmp(comm, "qm-guardian\n") != 0) {
            sleep_ms(5);
        }
    }
    CHECK(strcmp(comm, "qm-guardian\n") == 0, "it shows as qm-guardian");
    int32_t again = 0;
    CHECK(qm_guardian_start(&again) == QM_STATUS_OK && again == pid,
          "qm_guardian_start() again gives the same guardian");
    CHECK_STATUS(qm_guardian_start(NULL), QM_STATUS_OK, "qm_guardian_start(NULL)");
    guardian = pid;
}

static void check_error_accessors(void) {
    qm_config *config = NULL;
    CHECK_STATUS(qm_config_new(&config), QM_STATUS_OK, "qm_config_new");
    CHECK(qm_last_error_status() == QM_STATUS_OK, "after a success, the last error is OK");
    char buf[8] = "junk";
    CHECK(qm_last_error_message(buf, sizeof buf) == 0 && buf[0] == 0,
          "and its message is empty (0, an empty string)");
    CHECK(qm_last_error_message_dup() == NULL, "qm_last_error_message_dup() is NULL then");
    CHECK_STATUS(qm_config_set_accel(config, 99), QM_STATUS_INVALID_ARGUMENT, "a failing call");
    CHECK(qm_last_error_qmp_class(NULL, 0) == 0 && qm_last_error_qmp_desc(NULL, 0) == 0,
          "a failure that is not a QMP error has no QMP class or description");
    CHECK(strstr(last_error(), "accel") != NULL, "the message names the argument");
    CHECK(qm_guardian_pid() > 0 && qm_last_error_status() == QM_STATUS_INVALID_ARGUMENT,
          "qm_guardian_pid() leaves the last error alone");
    qm_config_free(config);
}

/* QEMU and the guardian are not in the program's process group, nor QEMU its child. */
static void check_process_tree(void) {
    char scratch[] = "/tmp/qm-c-tree-XXXXXX";
    CHECK(mkdtemp(scratch) != NULL, "make a scratch dir");
    char json[512];
    snprintf(json, sizeof json,
             "{\"args\": [\"-machine\", \"none\", \"-nodefaults\"], \"accel\": \"tcg\","
             " \"temp_dir\": \"%s\"}",
             scratch);
    qm_machine *machine = NULL;
    CHECK_STATUS(launch_json(json, &machine), QM_STATUS_OK, "launch with a temp_dir");
    if (machine == NULL) {
        return;
    }
    long pid = pid_of(machine);
    CHECK(qm_guardian_pid() == guardian && stat_field(pid, 4) == guardian,
          "QEMU is a child of the guardian, not of the program");
    int status;
    errno = 0;
    CHECK(waitpid((pid_t)pid, &status, WNOHANG) == -1 && errno == ECHILD,
          "waitpid() on QEMU's pid: ECHILD");
    CHECK(stat_field(pid, 5) == pid, "QEMU leads a process group of its own");
    CHECK(dir_entries(scratch) == 1, "its private temp dir is under the config's temp_dir");
    CHECK(count_tasks() == baseline_tasks, "with a machine running, the program has no new thread");

    /* Ctrl-C at the program's terminal: SIGINT to its process group (main() made it lead one). */
    CHECK(getpgrp() == getpid(), "the test program leads its own process group");
    if (getpgrp() == getpid()) {
        struct sigaction ignore, old;
        memset(&ignore, 0, sizeof ignore);
        ignore.sa_handler = SIG_IGN;
        sigaction(SIGINT, &ignore, &old);
        CHECK(kill(0, SIGINT) == 0, "SIGINT to the program's process group");
        int rounds = 0, good = 0;
        while (rounds < 20) {
            rounds++;
            good += answers_running(machine);
            sleep_ms(100);
        }
        sigaction(SIGINT, &old, NULL);
        CHECK(good == rounds, "QEMU did not get it: it answers for 2 s after");
        CHECK(kill((pid_t)guardian, 0) == 0 && waitpid((pid_t)guardian, &status, WNOHANG) == 0 &&
                  qm_guardian_pid() == guardian,
              "nor did the guardian");
    }
    qm_machine_free(machine);
    CHECK(wait_gone(pid) && dir_entries(scratch) == 0,
          "qm_machine_free() ended QEMU and removed its temp dir");

    /* Without a temp_dir: under $TMPDIR. */
    const char *old_tmpdir = getenv("TMPDIR");
    char *saved = old_tmpdir ? strdup(old_tmpdir) : NULL;
    setenv("TMPDIR", scratch, 1);
    machine = NULL;
    CHECK_STATUS(launch_json(NONE_JSON, &machine), QM_STATUS_OK, "launch without a temp_dir");
    CHECK(dir_entries(scratch) == 1, "its temp dir is under $TMPDIR");
    qm_machine_free(machine);
    CHECK(dir_entries(scratch) == 0, "and removed");
    if (saved) {
        setenv("TMPDIR", saved, 1);
        free(saved);
    } else {
        unsetenv("TMPDIR");
    }
    rmdir(scratch);
}

#define CHECK_BAD_TIMEOUT(call, what)                                                        \
    do {                                                                                     \
        CHECK_STATUS(call, QM_STATUS_INVALID_ARGUMENT, what);                                \
        CHECK(strstr(last_error(), "timeout_ms") != NULL, "  and the message names timeout_ms"); \
    } while (0)

static void check_timeouts(void) {
    qm_machine *machine = NULL;
    CHECK_STATUS(launch_json("{\"args\": [\"-machine\", \"q35\", \"-nodefaults\", \"-S\"],"
                             " \"accel\": \"tcg\", \"console\": true, \"qmp_timeout_ms\": 400}",
                             &machine),
                 QM_STATUS_OK, "launch a paused q35 with a console and a 400 ms QMP timeout");
    if (machine == NULL) {
        return;
    }
    long pid = pid_of(machine);
    qm_machine *other = (qm_machine *)&failures;
    size_t written = 99;
    char *json = NULL;

    /* Negative, other than QM_TIMEOUT_DEFAULT: refused, whatever the function. */
    CHECK_BAD_TIMEOUT(qm_machine_execute(machine, "query-status", NULL, -2, NULL),
                      "execute with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_execute_oob(machine, "query-status", NULL, INT64_MIN, NULL),
                      "execute_oob with INT64_MIN is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_event_wait(machine, "STOP", NULL, -2, NULL),
                      "event_wait with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_console_write(machine, (const uint8_t *)"x", 1, -2, &written),
                      "console_write with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK(written == 0, "  having written nothing");
    CHECK_BAD_TIMEOUT(qm_machine_console_wait_for(machine, "x", -2, NULL, NULL),
                      "console_wait_for with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_powerdown(machine, -2),
                      "powerdown with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_shutdown(machine, -2),
                      "shutdown with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_wait(machine, -1000), "wait with -1000 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_attach_unix("/nonexistent/qmp.sock", -2, &other),
                      "attach_unix with -2 is QM_STATUS_INVALID_ARGUMENT");
    CHECK_BAD_TIMEOUT(qm_machine_attach_tcp("127.0.0.1:1", -2, &other),
                      "attach_tcp with -2 is QM_STATUS_INVALID_ARGUMENT");
    char *state = NULL;
    CHECK(qm_machine_status(machine, &state) == QM_STATUS_OK && state &&
              strcmp(state, "prelaunch") == 0,
          "the refused calls did nothing: the machine is still in prelaunch");
    qm_string_free(state);

    /* 0: do not wait, take what is there. */
    CHECK_STATUS(qm_machine_event_wait(machine, "NEVER_SENT", NULL, 0, NULL), QM_STATUS_TIMEOUT,
                 "event_wait with 0 and nothing kept: QM_STATUS_TIMEOUT");
    CHECK_STATUS(qm_machine_wait(machine, 0), QM_STATUS_TIMEOUT,
                 "wait with 0 for a running QEMU: QM_STATUS_TIMEOUT");
    CHECK_STATUS(qm_machine_console_wait_for(machine, "never printed", 0, NULL, NULL),
                 QM_STATUS_TIMEOUT, "console_wait_for with 0: QM_STATUS_TIMEOUT");
    CHECK_STATUS(qm_machine_attach_unix("/nonexistent/qmp.sock", 0, &other), QM_STATUS_TIMEOUT,
                 "attach_unix with 0 to a missing socket: one attempt, QM_STATUS_TIMEOUT");
    CHECK_STATUS(qm_machine_execute(machine, "cont", NULL, QM_TIMEOUT_DEFAULT, NULL), QM_STATUS_OK,
                 "cont with QM_TIMEOUT_DEFAULT");
    CHECK_STATUS(qm_machine_execute(machine, "stop", NULL, QM_TIMEOUT_DEFAULT, NULL), QM_STATUS_OK,
                 "stop with QM_TIMEOUT_DEFAULT");
    CHECK_STATUS(qm_machine_event_wait(machine, "RESUME", NULL, 0, NULL), QM_STATUS_OK,
                 "event_wait with 0 takes a kept event");
    CHECK_STATUS(qm_machine_event_wait(machine, "STOP", NULL, QM_TIMEOUT_DEFAULT, NULL), QM_STATUS_OK,
                 "event_wait with QM_TIMEOUT_DEFAULT takes a kept event");
    qm_status zero = qm_machine_execute(machine, "query-name", NULL, 0, NULL);
    CHECK(zero == QM_STATUS_OK || zero == QM_STATUS_TIMEOUT,
          "execute with 0: the reply if it is already there, else QM_STATUS_TIMEOUT");
    CHECK(qm_machine_execute(machine, "query-status", NULL, QM_TIMEOUT_DEFAULT, &json) ==
                  QM_STATUS_OK &&
              json && strstr(json, "\"status\"") != NULL,
          "the next command gets its own reply (a late one is discarded)");
    qm_string_free(json);
    json = NULL;

    /* Positive: milliseconds. */
    CHECK_STATUS(qm_machine_event_wait(machine, "NEVER_SENT", NULL, 200, NULL), QM_STATUS_TIMEOUT,
                 "event_wait with 200 ms: QM_STATUS_TIMEOUT");
    CHECK(strstr(last_error(), "200ms") != NULL, "  after 200 ms, the message says");
    CHECK_STATUS(qm_machine_wait(machine, 200), QM_STATUS_TIMEOUT,
                 "wait with 200 ms for a running QEMU: QM_STATUS_TIMEOUT");
    CHECK_STATUS(qm_machine_attach_unix("/nonexistent/qmp.sock", 200, &other), QM_STATUS_TIMEOUT,
                 "attach_unix with 200 ms to a missing socket: QM_STATUS_TIMEOUT");
    CHECK_STATUS(qm_machine_powerdown(machine, 300), QM_STATUS_TIMEOUT,
                 "powerdown with 300 ms of a guest that ignores the button: QM_STATUS_TIMEOUT");
    CHECK(qm_machine_status(machine, &state) == QM_STATUS_OK && state &&
              strcmp(state, "paused") == 0,
          "and the machine keeps running (paused, as it was)");
    qm_string_free(state);

    /* QM_TIMEOUT_DEFAULT for a command is the machine's QMP timeout (400 ms here). */
    kill((pid_t)pid, SIGSTOP);
    CHECK_STATUS(qm_machine_execute(machine, "query-status", NULL, QM_TIMEOUT_DEFAULT, NULL),
                 QM_STATUS_TIMEOUT, "execute with QM_TIMEOUT_DEFAULT of a stopped QEMU times out");
    CHECK(strstr(last_error(), "400ms") != NULL, "  after the config's qmp_timeout_ms (400 ms)");
    CHECK(qm_machine_status(machine, &state) == QM_STATUS_TIMEOUT &&
              strstr(last_error(), "400ms") != NULL,
          "qm_machine_status is bound by the QMP timeout too");
    kill((pid_t)pid, SIGCONT);
    CHECK(qm_machine_execute(machine, "query-name", NULL, 10000, &json) == QM_STATUS_OK && json &&
              strstr(json, "\"status\"") == NULL,
          "after a timeout the machine is usable; the late reply was discarded");
    qm_string_free(json);

    qm_status s = qm_machine_shutdown(machine, 0);
    CHECK(s == QM_STATUS_NOT_GRACEFUL || s == QM_STATUS_OK,
          "shutdown with 0: quit, no waiting, then the kill");
    CHECK(qm_machine_exit_status(machine, NULL, NULL) == QM_STATUS_OK && wait_gone(pid),
          "QEMU is gone either way");
    qm_machine_free(machine);
}

static void check_strings_and_bytes(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    /* A wrapper writes bytes that are not UTF-8, and a NUL, to QEMU's log, from an environment
     * variable of the config. */
    CHECK_STATUS(qm_config_from_json(
                     "{\"wrapper\": [\"sh\", \"-c\","
                     " \"printf 'log<%s\\\\000\\\\377>' \\\"$QM_MARK\\\" >&2; exec \\\"$@\\\"\","
                     " \"sh\"], \"env\": {\"QM_MARK\": \"mark\"},"
                     " \"args\": [\"-machine\", \"none\", \"-nodefaults\"], \"accel\": \"tcg\"}",
                     &config),
                 QM_STATUS_OK, "config with a wrapper and env");
    /* Arguments are passed as is, and may hold any bytes. */
    const char *name = "a b;c'd $HOME \"\xff";
    CHECK_STATUS(qm_config_add_arg(config, "-name"), QM_STATUS_OK, "add -name");
    char *copy = strdup(name);
    CHECK_STATUS(qm_config_add_arg(config, copy), QM_STATUS_OK,
                 "add a name with spaces, quotes, $ and a byte that is not UTF-8");
    memset(copy, 'x', strlen(copy)); /* the library copied it */
    free(copy);
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch it");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    char *json = NULL;
    CHECK_STATUS(qm_machine_execute(machine, "query-name", NULL, -1, &json), QM_STATUS_OK,
                 "query-name");
    CHECK(json && strstr(json, "\"a b;c'd $HOME \\\"") != NULL,
          "QEMU got the argument as it was given (no shell, no splitting)");
    CHECK(json && valid_utf8((const unsigned char *)json),
          "the JSON the library returns is UTF-8 (QEMU replaced the byte)");
    qm_string_free(json);

    char *log = NULL;
    size_t len = 0;
    CHECK_STATUS(qm_machine_log(machine, &log, &len), QM_STATUS_OK, "qm_machine_log");
    CHECK(log && len > strlen(log) && has_bytes(log, len, "log<mark\0\377>", 11),
          "the log holds what was written, NUL and non-UTF-8 bytes included, with its length");
    qm_string_free(log);
    CHECK_STATUS(qm_machine_log(machine, &log, NULL), QM_STATUS_OK, "qm_machine_log without out_len");
    qm_string_free(log);

    /* Names and JSON must be UTF-8. */
    CHECK_STATUS(qm_machine_execute(machine, "query-\xff", NULL, -1, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "a command name that is not UTF-8 is refused");
    CHECK(strstr(last_error(), "`command`") && strstr(last_error(), "UTF-8"),
          "  the message names `command` and says UTF-8");
    CHECK_STATUS(qm_machine_event_wait(machine, "STOP\xfe", NULL, 0, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "an event name that is not UTF-8 is refused");
    CHECK(strstr(last_error(), "`name`") != NULL, "  the message names `name`");
    CHECK_STATUS(qm_machine_execute(machine, "query-status", "{\"a\": \"\xff\"}", -1, NULL),
                 QM_STATUS_INVALID_JSON, "JSON arguments that are not UTF-8 are refused");
    CHECK(strstr(last_error(), "arguments_json") != NULL, "  the message names arguments_json");
    qm_config *bad = NULL;
    CHECK_STATUS(qm_config_from_json("{\"binary\": \"\xff\"}", &bad), QM_STATUS_INVALID_JSON,
                 "a config whose JSON is not UTF-8 is refused");
    qm_machine_free(machine);

    /* Paths are bytes: a temp dir whose name is not UTF-8. */
    char scratch[] = "/tmp/qm-c-bytes-XXXXXX";
    CHECK(mkdtemp(scratch) != NULL, "make a scratch dir");
    char dir[64];
    snprintf(dir, sizeof dir, "%s/\xff\xfe", scratch);
    CHECK(mkdir(dir, 0700) == 0, "make a dir whose name is not UTF-8");
    CHECK_STATUS(qm_config_from_json(NONE_JSON, &config), QM_STATUS_OK, "config");
    CHECK_STATUS(qm_config_set_temp_dir(config, dir), QM_STATUS_OK,
                 "a temp_dir that is not UTF-8 is accepted");
    machine = NULL;
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "and QEMU launches with it");
    CHECK(dir_entries(dir) == 1, "the machine's temp dir is made there");
    qm_machine_free(machine);
    CHECK(dir_entries(dir) == 0, "and removed by qm_machine_free()");
    qm_machine *attached = NULL;
    CHECK_STATUS(qm_machine_attach_unix("/nonexistent/\xff.qmp", 0, &attached), QM_STATUS_TIMEOUT,
                 "a socket path that is not UTF-8 is tried (missing: QM_STATUS_TIMEOUT)");
    CHECK_STATUS(qm_config_set_binary(config, "/nonexistent/\xff" "qemu"), QM_STATUS_OK,
                 "a binary path that is not UTF-8 is accepted");
    machine = NULL;
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_BINARY_NOT_FOUND,
                 "and launching it is QM_STATUS_BINARY_NOT_FOUND");
    CHECK(strstr(last_error(), "/nonexistent/") != NULL && valid_utf8((const unsigned char *)last_error()),
          "  with a UTF-8 message naming the path");
    qm_config_free(config);
    rmdir(dir);
    rmdir(scratch);
}

static void check_oob(void) {
    qm_machine *machine = NULL;
    CHECK_STATUS(launch_json("{\"binary\": \"qemu-system-x86_64\","
                             " \"args\": [\"-machine\", \"none\", \"-nodefaults\"],"
                             " \"accel\": \"tcg\", \"oob\": false}",
                             &machine),
                 QM_STATUS_OK, "launch with \"oob\": false");
    CHECK_STATUS(qm_machine_execute_oob(machine, "migrate-pause", NULL, -1, NULL),
                 QM_STATUS_INVALID_STATE, "execute_oob without oob is QM_STATUS_INVALID_STATE");
    CHECK(strstr(last_error(), "oob") || strstr(last_error(), "out-of-band"),
          "  and the message says why");
    CHECK(answers_running(machine), "the machine still answers in band");
    qm_machine_free(machine);
    machine = NULL;
    CHECK_STATUS(launch_json(NONE_JSON, &machine), QM_STATUS_OK, "launch with oob (the default)");
    char class_buf[64] = {0};
    CHECK_STATUS(qm_machine_execute_oob(machine, "migrate-pause", NULL, -1, NULL),
                 QM_STATUS_QMP_ERROR, "execute_oob migrate-pause reaches QEMU (no migration: an error)");
    qm_last_error_qmp_class(class_buf, sizeof class_buf);
    CHECK(strcmp(class_buf, "GenericError") == 0 && strstr(last_error(), "migrate-pause"),
          "  QEMU's own answer");
    CHECK_STATUS(qm_machine_execute_oob(machine, "query-status", NULL, -1, NULL),
                 QM_STATUS_QMP_ERROR, "a command QEMU does not allow out-of-band: QM_STATUS_QMP_ERROR");
    CHECK(strstr(last_error(), "OOB") != NULL, "  QEMU says it does not support OOB");
    qm_machine_free(machine);
}

static void check_fds(void) {
    int fds[2];
    CHECK(pipe(fds) == 0, "make a pipe");
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json(NONE_JSON, &config), QM_STATUS_OK, "config");
    CHECK_STATUS(qm_config_add_fd(config, fds[0], 3, "qm-opaque"), QM_STATUS_OK, "qm_config_add_fd");
    close(fds[0]); /* the library has its own duplicate */
    CHECK_STATUS(qm_config_add_fd(config, fds[0], 4, NULL), QM_STATUS_INVALID_ARGUMENT,
                 "the closed fd is refused");
    CHECK_STATUS(qm_config_add_fd(config, fds[1], 4, "\xff"), QM_STATUS_INVALID_ARGUMENT,
                 "opaque text that is not UTF-8 is refused");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch with the fd");
    qm_config_free(config);
    char *json = NULL;
    CHECK_STATUS(qm_machine_execute(machine, "query-fdsets", NULL, -1, &json), QM_STATUS_OK,
                 "query-fdsets");
    CHECK(json && strstr(json, "\"fdset-id\":3") && strstr(json, "qm-opaque"),
          "QEMU has the fd in fdset 3 with its opaque text, though we closed ours first");
    qm_string_free(json);
    CHECK_STATUS(qm_machine_send_fd(machine, fds[1], "qmfd"), QM_STATUS_OK, "qm_machine_send_fd");
    close(fds[1]);
    CHECK_STATUS(qm_machine_execute(machine, "closefd", "{\"fdname\": \"qmfd\"}", -1, NULL),
                 QM_STATUS_OK, "QEMU has it under its name (closefd), though we closed ours");
    CHECK_STATUS(qm_machine_execute(machine, "closefd", "{\"fdname\": \"qmfd\"}", -1, NULL),
                 QM_STATUS_QMP_ERROR, "and only once");
    CHECK_STATUS(qm_machine_send_fd(machine, fds[1], "again"), QM_STATUS_INVALID_ARGUMENT,
                 "send_fd of a closed fd is refused");
    CHECK_STATUS(qm_machine_send_fd(machine, 0, "\xff"), QM_STATUS_INVALID_ARGUMENT,
                 "a name that is not UTF-8 is refused");
    qm_machine_free(machine);
}

/* A free TCP port on 127.0.0.1 (free when we looked). */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = 0;
    if (s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(s, (struct sockaddr *)&addr, &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    if (s >= 0) {
        close(s);
    }
    return port;
}

static void check_attach(void) {
    char dir[] = "/tmp/qm-c-attach-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "make a scratch dir");
    char sock[128], unix_arg[160], tcp_arg[64], address[32];
    int port = free_port();
    snprintf(sock, sizeof sock, "%s/mon.qmp", dir);
    snprintf(unix_arg, sizeof unix_arg, "unix:%s,server=on,wait=off", sock);
    snprintf(tcp_arg, sizeof tcp_arg, "tcp:127.0.0.1:%d,server=on,wait=off", port);
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    qm_config *config = NULL;
    qm_machine *owner = NULL, *by_unix = NULL, *by_tcp = NULL;
    CHECK_STATUS(qm_config_from_json(NONE_JSON, &config), QM_STATUS_OK, "config");
    qm_config_add_arg(config, "-qmp");
    qm_config_add_arg(config, unix_arg);
    qm_config_add_arg(config, "-qmp");
    qm_config_add_arg(config, tcp_arg);
    CHECK_STATUS(qm_machine_launch(config, &owner), QM_STATUS_OK,
                 "launch with two more QMP monitors, unix and TCP");
    qm_config_free(config);
    if (owner == NULL) {
        rmdir(dir);
        return;
    }
    long pid = pid_of(owner);
    CHECK_STATUS(qm_machine_attach_unix(sock, QM_TIMEOUT_DEFAULT, &by_unix), QM_STATUS_OK,
                 "attach_unix");
    CHECK(answers_running(by_unix), "the attached machine answers");
    int32_t attached_pid = 99;
    CHECK(qm_machine_pid(by_unix, &attached_pid) == QM_STATUS_OK && attached_pid == 0,
          "an attached machine's pid is 0");
    CHECK_STATUS(qm_machine_shutdown(by_unix, 1000), QM_STATUS_UNSUPPORTED,
                 "shutdown of an attached machine is QM_STATUS_UNSUPPORTED");
    CHECK_STATUS(qm_machine_kill(by_unix), QM_STATUS_UNSUPPORTED, "so is kill");
    CHECK_STATUS(qm_machine_wait(by_unix, 0), QM_STATUS_UNSUPPORTED, "and wait");
    CHECK_STATUS(qm_machine_exit_status(by_unix, NULL, NULL), QM_STATUS_INVALID_STATE,
                 "its exit status is QM_STATUS_INVALID_STATE");
    char *log = NULL;
    CHECK_STATUS(qm_machine_log(by_unix, &log, NULL), QM_STATUS_UNSUPPORTED,
                 "it has no log: QM_STATUS_UNSUPPORTED");
    CHECK_STATUS(qm_machine_attach_tcp("not an address", 1000, &by_tcp),
                 QM_STATUS_INVALID_ARGUMENT, "attach_tcp to something that is not IP:PORT");
    CHECK_STATUS(qm_machine_attach_tcp(address, QM_TIMEOUT_DEFAULT, &by_tcp), QM_STATUS_OK,
                 "attach_tcp");
    CHECK(answers_running(by_tcp), "the TCP-attached machine answers");
    qm_machine_free(by_unix);
    CHECK(kill((pid_t)pid, 0) == 0 && answers_running(owner),
          "freeing an attached machine only disconnects: QEMU runs on");
    CHECK_STATUS(qm_machine_execute(by_tcp, "quit", NULL, QM_TIMEOUT_DEFAULT, NULL), QM_STATUS_OK,
                 "quit through the attached machine");
    qm_status s = qm_machine_event_wait(by_tcp, "NEVER_SENT", NULL, 10000, NULL);
    CHECK(s == QM_STATUS_DISCONNECTED || s == QM_STATUS_PROCESS_EXITED,
          "an event wait on it then ends with the connection, not a timeout");
    CHECK_STATUS(qm_machine_wait(owner, 10000), QM_STATUS_OK, "the owner sees QEMU exit");
    int32_t code = -2;
    CHECK(qm_machine_exit_status(owner, &code, NULL) == QM_STATUS_OK && code == 0,
          "with status 0");
    qm_machine_free(by_tcp);
    qm_machine_free(owner);
    unlink(sock);
    rmdir(dir);
}

static void check_free_running(void) {
    char marker[64], scratch[] = "/tmp/qm-c-free-XXXXXX", json[768];
    snprintf(marker, sizeof marker, "qm-c-free-running-%d", (int)getpid());
    CHECK(mkdtemp(scratch) != NULL, "make a scratch dir");
    snprintf(json, sizeof json,
             "{\"wrapper\": [\"sh\", \"-c\", \"\\\"$@\\\"; exit $?\", \"sh\"],"
             " \"args\": [\"-machine\", \"none\", \"-nodefaults\", \"-name\", \"%s\"],"
             " \"accel\": \"tcg\", \"temp_dir\": \"%s\"}",
             marker, scratch);
    qm_machine *machine = NULL;
    CHECK_STATUS(launch_json(json, &machine), QM_STATUS_OK,
                 "launch under a wrapper that forks QEMU, with a temp_dir");
    long pid = pid_of(machine);
    CHECK(count_marked(marker) == 2 && dir_entries(scratch) == 1,
          "the wrapper and QEMU run; the temp dir exists");
    qm_machine_free(machine); /* kills and reaps */
    CHECK(pid > 0 && kill((pid_t)pid, 0) != 0,
          "freeing a running machine kills and reaps it (at once)");
    CHECK(wait_unmarked(marker), "QEMU, in the wrapper's process group, went with it");
    CHECK(dir_entries(scratch) == 0, "the temp dir was removed");
    rmdir(scratch);
}

static void check_shutdown_not_graceful(void) {
    qm_machine *machine = NULL;
    CHECK_STATUS(launch_json(NONE_JSON, &machine), QM_STATUS_OK, "launch");
    long pid = pid_of(machine);
    CHECK_STATUS(qm_machine_exit_status(machine, NULL, NULL), QM_STATUS_INVALID_STATE,
                 "exit_status while QEMU runs is QM_STATUS_INVALID_STATE");
    kill((pid_t)pid, SIGSTOP); /* QEMU cannot act on quit */
    CHECK_STATUS(qm_machine_shutdown(machine, 300), QM_STATUS_NOT_GRACEFUL,
                 "shutdown of a QEMU that does not quit: QM_STATUS_NOT_GRACEFUL");
    int32_t code = -2, sig = -2;
    CHECK(qm_machine_exit_status(machine, &code, &sig) == QM_STATUS_OK && code == -1 && sig == SIGKILL,
          "it was killed with SIGKILL (code -1, signal 9)");
    CHECK(wait_gone(pid), "and is gone");
    CHECK_STATUS(qm_machine_shutdown(machine, 300), QM_STATUS_OK,
                 "shutdown of a QEMU that has exited: QM_STATUS_OK at once");
    CHECK_STATUS(qm_machine_kill(machine), QM_STATUS_OK, "so is kill");
    qm_machine_free(machine);
}

static void check_console_log_existing(void) {
    char dir[] = "/tmp/qm-c-conlog-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL, "make a scratch dir");
    snprintf(path, sizeof path, "%s/console.log", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("old contents", f);
        fclose(f);
    }
    chmod(path, 0640);
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"q35\", \"-nodefaults\", \"-S\"],"
                                     " \"accel\": \"tcg\"}",
                                     &config),
                 QM_STATUS_OK, "config");
    CHECK_STATUS(qm_config_set_console_log(config, path), QM_STATUS_OK,
                 "a console log over an existing file");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch (a guest that never runs)");
    qm_config_free(config);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 0 && (st.st_mode & 0777) == 0640,
          "the existing file is truncated and keeps its mode");
    uint8_t byte;
    size_t got = 99;
    CHECK(qm_machine_console_read(machine, &byte, 1, &got) == QM_STATUS_OK && got == 0,
          "the console log enabled the console (nothing printed yet)");
    qm_machine_free(machine);
    unlink(path);
    rmdir(dir);
}

/* QEMU killed behind the library's back: the next writes to its sockets fail with EPIPE, which
 * must not raise SIGPIPE (left at its default, it would kill this program). */
static void check_sigpipe(void) {
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, &old);
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"q35\", \"-nodefaults\", \"-S\"],"
                                     " \"accel\": \"tcg\"}",
                                     &config),
                 QM_STATUS_OK, "config");
    CHECK_STATUS(qm_config_set_console(config, true), QM_STATUS_OK, "qm_config_set_console");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch with a console");
    qm_config_free(config);
    long pid = pid_of(machine);
    kill((pid_t)pid, SIGKILL);
    CHECK(wait_gone(pid), "QEMU killed from outside the library");
    qm_status s = qm_machine_console_write(machine, (const uint8_t *)"hello\n", 6, 1000, NULL);
    CHECK(s == QM_STATUS_PROCESS_EXITED || s == QM_STATUS_DISCONNECTED,
          "a console write to it fails, without SIGPIPE");
    s = qm_machine_execute(machine, "query-status", NULL, 1000, NULL);
    CHECK(s == QM_STATUS_PROCESS_EXITED || s == QM_STATUS_DISCONNECTED,
          "so does a command, without SIGPIPE");
    s = qm_machine_event_wait(machine, NULL, NULL, 10000, NULL);
    CHECK(s == QM_STATUS_PROCESS_EXITED || s == QM_STATUS_DISCONNECTED,
          "an event wait ends with the connection, not a timeout");
    CHECK_STATUS(qm_machine_wait(machine, QM_TIMEOUT_DEFAULT), QM_STATUS_OK, "wait");
    int32_t sig = 0;
    CHECK(qm_machine_exit_status(machine, NULL, &sig) == QM_STATUS_OK && sig == SIGKILL,
          "the exit status says SIGKILL");
    qm_machine_free(machine);
    sigaction(SIGPIPE, &old, NULL);
}

/* ---- threads: per-thread errors, a handle in use, different handles at once --------------- */

struct thread_errors {
    qm_status before, status, after_status;
    char message[256];
};

static void *fail_on_thread(void *arg) {
    struct thread_errors *t = arg;
    t->before = qm_last_error_status();
    t->status = qm_config_new(NULL);
    t->after_status = qm_last_error_status();
    qm_last_error_message(t->message, sizeof t->message);
    return NULL;
}

struct in_use {
    qm_machine *machine;
    qm_status status;
};

static void *wait_for_stop(void *arg) {
    struct in_use *u = arg;
    u->status = qm_machine_event_wait(u->machine, "STOP", NULL, 60000, NULL);
    return NULL;
}

static void check_threads(void) {
    qm_config *config = NULL;
    CHECK_STATUS(qm_config_from_json("{\"args\": [", &config), QM_STATUS_INVALID_JSON,
                 "a failing call on this thread");
    pthread_t thread;
    struct thread_errors t;
    memset(&t, 0, sizeof t);
    CHECK(pthread_create(&thread, NULL, fail_on_thread, &t) == 0 &&
              pthread_join(thread, NULL) == 0,
          "a thread that fails another call");
    CHECK(t.before == QM_STATUS_OK, "the other thread does not see this thread's error");
    CHECK(t.status == QM_STATUS_NULL_ARGUMENT && t.after_status == QM_STATUS_NULL_ARGUMENT &&
              strstr(t.message, "out") != NULL,
          "it reads its own");
    CHECK(qm_last_error_status() == QM_STATUS_INVALID_JSON, "and this thread still reads its own");

    char dir[] = "/tmp/qm-c-threads-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "make a scratch dir");
    char sock[128], arg[160];
    snprintf(sock, sizeof sock, "%s/second.qmp", dir);
    snprintf(arg, sizeof arg, "unix:%s,server=on,wait=off", sock);
    qm_machine *machine = NULL, *second = NULL;
    CHECK_STATUS(qm_config_from_json(NONE_JSON, &config), QM_STATUS_OK, "config");
    qm_config_add_arg(config, "-qmp");
    qm_config_add_arg(config, arg);
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK,
                 "launch with a second QMP monitor");
    qm_config_free(config);
    if (machine == NULL) {
        rmdir(dir);
        return;
    }
    long pid = pid_of(machine);
    struct in_use u = {machine, QM_STATUS_PANIC};
    CHECK(pthread_create(&thread, NULL, wait_for_stop, &u) == 0,
          "another thread waits on the machine for a STOP only this thread will cause");
    /* Once that thread's call has the handle, calls here are refused (it waits up to 60 s). */
    qm_status s = QM_STATUS_OK;
    for (int i = 0; i < 60000 && s == QM_STATUS_OK; i++) {
        int32_t p = 0;
        s = qm_machine_pid(machine, &p);
        if (s == QM_STATUS_OK) {
            sleep_ms(1);
        }
    }
    CHECK(s == QM_STATUS_INVALID_HANDLE && strstr(last_error(), "in use") != NULL,
          "a call on a handle in use by another thread is QM_STATUS_INVALID_HANDLE (in use)");
    CHECK_STATUS(qm_machine_attach_unix(sock, 10000, &second), QM_STATUS_OK,
                 "meanwhile another handle works from this thread");
    qm_machine_free(machine); /* during the other thread's call */
    CHECK_STATUS(qm_machine_pid(machine, NULL), QM_STATUS_INVALID_HANDLE,
                 "a handle freed during another thread's call is invalid at once");
    CHECK(kill((pid_t)pid, 0) == 0, "but the machine lives until that call returns");
    s = qm_machine_execute(second, "stop", NULL, 10000, NULL);
    CHECK(s == QM_STATUS_OK || s == QM_STATUS_DISCONNECTED, "stop through the second monitor");
    CHECK(pthread_join(thread, NULL) == 0 && u.status == QM_STATUS_OK,
          "the waiting thread got its STOP");
    CHECK(wait_gone(pid), "and when its call returned, the freed machine went");
    qm_machine_free(second);
    unlink(sock);
    rmdir(dir);
}

/* QM_TEST_MODE=forker: see the top of the file. */
static int play_forker(void) {
    qm_machine *machine = NULL;
    if (launch_json(NONE_JSON, &machine) != QM_STATUS_OK) {
        fprintf(stderr, "forker: %s\n", last_error());
        return 2;
    }
    pid_t child = fork();
    if (child == 0) {
        char byte;
        while (read(0, &byte, 1) > 0) {
        }
        _exit(0);
    }
    printf("FORKER %d %d\n", (int)pid_of(machine), (int)child);
    fflush(stdout);
    char byte;
    while (read(0, &byte, 1) > 0) {
        /* blocks until killed */
    }
    return 0;
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
    printf("OWNER %d %d %s %d\n", (int)pid1, (int)pid2, port ? port + 1 : "0",
           (int)qm_guardian_pid());
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

/* ---- the qtest machine (QEMUQtestMachine) --------------------------------------------------- */

/* Whether this QEMU has the qtest accelerator (Debian's 7.2 does not). */
static int binary_has_qtest_accel(void) {
    FILE *p = popen("qemu-system-x86_64 -accel help 2>/dev/null", "r");
    if (p == NULL) {
        return 0;
    }
    char line[128];
    int found = 0;
    while (fgets(line, sizeof line, p) != NULL) {
        if (strcmp(line, "qtest\n") == 0) {
            found = 1;
        }
    }
    pclose(p);
    return found;
}

static int cmos_read(qm_machine *machine, uint32_t reg, uint32_t *value) {
    return qm_machine_qtest_out(machine, 1, 0x70, reg, QM_TIMEOUT_DEFAULT) == QM_STATUS_OK &&
           qm_machine_qtest_in(machine, 1, 0x71, QM_TIMEOUT_DEFAULT, value) == QM_STATUS_OK;
}

static int cmos_write(qm_machine *machine, uint32_t reg, uint32_t value) {
    return qm_machine_qtest_out(machine, 1, 0x70, reg, QM_TIMEOUT_DEFAULT) == QM_STATUS_OK &&
           qm_machine_qtest_out(machine, 1, 0x71, value, QM_TIMEOUT_DEFAULT) == QM_STATUS_OK;
}

static void check_qtest(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"q35\", \"-nodefaults\"]}",
                                     &config),
                 QM_STATUS_OK, "a q35 config");
    CHECK_STATUS(qm_config_set_qtest(config, true), QM_STATUS_OK, "qm_config_set_qtest");
    CHECK_STATUS(qm_config_set_console_device(config, "isa-serial", 1), QM_STATUS_OK,
                 "qm_config_set_console_device(\"isa-serial\", 1)");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch a qtest machine");
    qm_config_free(config);
    if (machine == NULL) {
        return;
    }
    uint32_t value = 0;
    CHECK(qm_machine_qtest_out(machine, 4, 0xcf8, 0x80000000u, QM_TIMEOUT_DEFAULT) ==
                  QM_STATUS_OK &&
              qm_machine_qtest_in(machine, 4, 0xcfc, QM_TIMEOUT_DEFAULT, &value) == QM_STATUS_OK &&
              value == 0x29c08086u,
          "qtest reads the q35 host bridge's vendor and device ids through 0xcf8/0xcfc");
    char *reply = NULL;
    CHECK(qm_machine_qtest(machine, "inw 0xcfe", QM_TIMEOUT_DEFAULT, &reply) == QM_STATUS_OK &&
              reply && strcmp(reply, "0x29c0") == 0,
          "qm_machine_qtest returns the values of QEMU's OK answer");
    qm_string_free(reply);
    CHECK_STATUS(qm_machine_qtest_in(machine, 3, 0xcfc, QM_TIMEOUT_DEFAULT, &value),
                 QM_STATUS_INVALID_ARGUMENT, "a port width of 3 is refused");
    CHECK_STATUS(qm_machine_qtest_out(machine, 1, 0x80, 0x100, QM_TIMEOUT_DEFAULT),
                 QM_STATUS_INVALID_ARGUMENT, "a value wider than the port is refused");

    /* The CMOS RTC: stop its updates, set the hour, read it back. */
    uint32_t hours = 0;
    CHECK(cmos_write(machine, 0x0b, 0x02) && cmos_write(machine, 0x0a, 0x76) &&
              cmos_write(machine, 0x04, 0x23) && cmos_read(machine, 0x04, &hours) &&
              hours == 0x23,
          "qtest drives the CMOS RTC through 0x70/0x71");

    /* Guest RAM. */
    unsigned char data[3000], back[3000];
    for (size_t i = 0; i < sizeof data; i++) {
        data[i] = (unsigned char)(i * 7 + 3);
    }
    memset(back, 0, sizeof back);
    CHECK(qm_machine_qtest_write(machine, 0x100000, data, sizeof data, QM_TIMEOUT_DEFAULT) ==
                  QM_STATUS_OK &&
              qm_machine_qtest_read(machine, 0x100000, back, sizeof back, QM_TIMEOUT_DEFAULT) ==
                  QM_STATUS_OK &&
              memcmp(data, back, sizeof data) == 0,
          "guest RAM written and read back");
    uint64_t word = 0;
    CHECK(qm_machine_qtest_writen(machine, 8, 0x200000, 0x1122334455667788ull,
                                  QM_TIMEOUT_DEFAULT) == QM_STATUS_OK &&
              qm_machine_qtest_readn(machine, 8, 0x200000, QM_TIMEOUT_DEFAULT, &word) ==
                  QM_STATUS_OK &&
              word == 0x1122334455667788ull &&
              qm_machine_qtest_readn(machine, 1, 0x200000, QM_TIMEOUT_DEFAULT, &word) ==
                  QM_STATUS_OK &&
              word == 0x88,
          "writen/readn of 8 and 1 bytes, little-endian");
    CHECK_STATUS(qm_machine_qtest_writen(machine, 2, 0x200000, 0x10000, QM_TIMEOUT_DEFAULT),
                 QM_STATUS_INVALID_ARGUMENT, "a value wider than 2 bytes is refused");
    CHECK(qm_machine_qtest_memset(machine, 0x100000, 4, 0x2a, QM_TIMEOUT_DEFAULT) ==
                  QM_STATUS_OK &&
              qm_machine_qtest_read(machine, 0x100000, back, 5, QM_TIMEOUT_DEFAULT) ==
                  QM_STATUS_OK &&
              memcmp(back, "****", 4) == 0 && back[4] == data[4],
          "memset fills guest RAM");
    CHECK_STATUS(qm_machine_qtest_read(machine, 0x100000, NULL, 0, QM_TIMEOUT_DEFAULT),
                 QM_STATUS_OK, "a read of nothing asks QEMU nothing");

    /* The virtual clock needs the qtest accelerator. */
    int64_t clock = -1;
    if (binary_has_qtest_accel()) {
        CHECK(qm_machine_qtest_clock_step(machine, 1000, QM_TIMEOUT_DEFAULT, &clock) ==
                      QM_STATUS_OK &&
                  clock >= 1000,
              "clock_step moves the virtual clock");
    } else {
        CHECK(qm_machine_qtest_clock_step(machine, 1000, QM_TIMEOUT_DEFAULT, &clock) ==
                      QM_STATUS_UNSUPPORTED &&
                  strstr(last_error(), "needs the qtest accelerator") != NULL,
              "clock_step without the qtest accelerator is QM_STATUS_UNSUPPORTED");
        CHECK_STATUS(qm_machine_qtest_clock_set(machine, 5, QM_TIMEOUT_DEFAULT, NULL),
                     QM_STATUS_UNSUPPORTED, "so is clock_set");
    }
    CHECK_STATUS(qm_machine_qtest_clock_step(machine, -2, QM_TIMEOUT_DEFAULT, NULL),
                 QM_STATUS_INVALID_ARGUMENT, "a negative clock step other than -1 is refused");

    /* Failing and malformed lines. */
    CHECK(qm_machine_qtest(machine, "foo bar", QM_TIMEOUT_DEFAULT, NULL) ==
                  QM_STATUS_QTEST_ERROR &&
              strstr(last_error(), "\"foo bar\"") != NULL &&
              strstr(last_error(), "FAIL Unknown command 'foo'") != NULL,
          "a failing qtest line is QM_STATUS_QTEST_ERROR naming the line and QEMU's answer");
    CHECK(qm_machine_qtest(machine, "inb", QM_TIMEOUT_DEFAULT, NULL) ==
                  QM_STATUS_INVALID_ARGUMENT &&
              strstr(last_error(), "QEMU aborts") != NULL,
          "a line QEMU would abort on is refused before sending");
    CHECK_STATUS(qm_machine_qtest(machine, "inb 0x80", QM_TIMEOUT_DEFAULT, NULL), QM_STATUS_OK,
                 "and QEMU still answers");

    /* Interrupts. */
    char *json = NULL;
    CHECK_STATUS(qm_machine_qtest_irq_intercept(machine, "ioapic", false, QM_TIMEOUT_DEFAULT),
                 QM_STATUS_OK, "intercept the I/O APIC's inputs");
    CHECK_STATUS(qm_machine_qtest_irq_intercept(machine, "/machine/nowhere", true,
                                                QM_TIMEOUT_DEFAULT),
                 QM_STATUS_QTEST_ERROR, "intercepting a second device fails");
    CHECK(qm_machine_qtest_set_irq_in(machine, "ioapic", NULL, 5, 1, QM_TIMEOUT_DEFAULT) ==
                  QM_STATUS_OK &&
              qm_machine_qtest_irqs(machine, 0, &json) == QM_STATUS_OK && json &&
              strcmp(json, "[{\"num\":5,\"raised\":true}]") == 0,
          "an intercepted IRQ is seen raised, as JSON");
    qm_string_free(json);
    json = NULL;
    CHECK_STATUS(qm_machine_qtest_irqs(machine, 0, &json), QM_STATUS_TIMEOUT,
                 "no IRQ notification left: QM_STATUS_TIMEOUT");
    /* The RTC's periodic interrupt comes by itself. */
    uint32_t flags = 0;
    CHECK(cmos_write(machine, 0x0a, 0x26) && cmos_read(machine, 0x0c, &flags) &&
              cmos_write(machine, 0x0b, 0x42) &&
              qm_machine_qtest_irqs(machine, 60000, &json) == QM_STATUS_OK && json &&
              strstr(json, "{\"num\":8,\"raised\":true}") != NULL,
          "the RTC's periodic interrupt arrives while waiting");
    qm_string_free(json);

    /* The console is the second ISA serial port. */
    const char *hello = "hello from COM2\n";
    int wrote = 1;
    for (const char *c = hello; *c; c++) {
        wrote &= qm_machine_qtest_out(machine, 1, 0x2f8, (uint32_t)(unsigned char)*c,
                                      QM_TIMEOUT_DEFAULT) == QM_STATUS_OK;
    }
    char *before = NULL;
    CHECK(wrote &&
              qm_machine_console_wait_for(machine, "\n", 30000, &before, NULL) == QM_STATUS_OK &&
              before && strcmp(before, "hello from COM2") == 0,
          "the console carries the second ISA serial port");
    qm_string_free(before);

    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK, "shutdown");
    CHECK_STATUS(qm_machine_qtest(machine, "inb 0x80", QM_TIMEOUT_DEFAULT, NULL),
                 QM_STATUS_PROCESS_EXITED, "qtest after QEMU's exit: QM_STATUS_PROCESS_EXITED");
    qm_machine_free(machine);
}

/* ---- monitors, names, logs, events, raw requests, waits (QEMUMachine) ------------------------ */

static int file_mode(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

static int file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void check_qemumachine(void) {
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    bool running = false;

    /* Without QMP. */
    CHECK_STATUS(qm_config_from_json(NONE_JSON, &config), QM_STATUS_OK, "config");
    CHECK_STATUS(qm_config_set_qmp(config, false), QM_STATUS_OK, "qm_config_set_qmp(false)");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch without QMP");
    CHECK(qm_machine_is_running(machine, &running) == QM_STATUS_OK && running,
          "qm_machine_is_running: it runs");
    CHECK_STATUS(qm_machine_execute(machine, "query-status", NULL, QM_TIMEOUT_DEFAULT, NULL),
                 QM_STATUS_UNSUPPORTED, "QMP without QMP is QM_STATUS_UNSUPPORTED");
    int32_t code = -2;
    CHECK(qm_machine_shutdown(machine, 10000) == QM_STATUS_OK &&
              qm_machine_exit_status(machine, &code, NULL) == QM_STATUS_OK && code == 0,
          "shutdown without QMP: SIGTERM, exit status 0");
    CHECK(qm_machine_is_running(machine, &running) == QM_STATUS_OK && !running,
          "qm_machine_is_running: no longer");
    qm_machine_free(machine);
    machine = NULL;
    qm_config_free(config);
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"no-such-machine\"], "
                                     "\"accel\": \"tcg\", \"qmp\": false}",
                                     &config),
                 QM_STATUS_OK, "config of a QEMU that fails");
    CHECK_STATUS(qm_config_set_launch_settle_ms(config, 30000), QM_STATUS_OK,
                 "qm_config_set_launch_settle_ms");
    CHECK(qm_machine_launch(config, &machine) == QM_STATUS_LAUNCH_FAILED &&
              strstr(last_error(), "unsupported machine type") != NULL,
          "a failing launch without QMP is QM_STATUS_LAUNCH_FAILED with QEMU's output");
    qm_config_free(config);

    /* QMP servers, -monitor null, a pty console, a name and a log dir. */
    char dir[] = "/tmp/qm-c-qmm-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "make a scratch dir");
    char sock[160], listen[200], logs[160], log[220], console_log[220];
    snprintf(sock, sizeof sock, "%s/m.qmp", dir);
    snprintf(listen, sizeof listen, "unix:%s", sock);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    snprintf(log, sizeof log, "%s/c-vm.log", logs);
    snprintf(console_log, sizeof console_log, "%s/c-vm-console.log", logs);
    CHECK_STATUS(qm_config_from_json("{\"args\": [\"-machine\", \"none\"], \"accel\": \"tcg\"}",
                                     &config),
                 QM_STATUS_OK, "config without -nodefaults");
    CHECK_STATUS(qm_config_add_qmp_listen(config, "tcp:0"), QM_STATUS_OK,
                 "qm_config_add_qmp_listen(tcp:0)");
    CHECK_STATUS(qm_config_add_qmp_listen(config, listen), QM_STATUS_OK,
                 "qm_config_add_qmp_listen(unix:PATH)");
    CHECK_STATUS(qm_config_add_qmp_listen(config, "udp:1"), QM_STATUS_INVALID_ARGUMENT,
                 "an address that is neither unix: nor tcp: is refused");
    CHECK_STATUS(qm_config_set_monitor_null(config, true), QM_STATUS_OK,
                 "qm_config_set_monitor_null");
    CHECK_STATUS(qm_config_set_console_pty(config, true), QM_STATUS_OK,
                 "qm_config_set_console_pty");
    CHECK_STATUS(qm_config_set_name(config, "c-vm"), QM_STATUS_OK, "qm_config_set_name");
    CHECK_STATUS(qm_config_set_log_dir(config, logs), QM_STATUS_OK, "qm_config_set_log_dir");
    machine = NULL;
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK, "launch it");
    qm_config_free(config);
    if (machine == NULL) {
        rmdir(dir);
        return;
    }
    char *text = NULL;
    int port = 0;
    CHECK(qm_machine_qmp_listen_addresses(machine, &text) == QM_STATUS_OK && text &&
              sscanf(text, "[\"tcp:127.0.0.1:%d\"", &port) == 1 && port > 0 &&
              strstr(text, sock) != NULL,
          "the QMP servers as QEMU listens: loopback, the port it picked, the unix path");
    qm_string_free(text);
    char address[32];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    qm_machine *second = NULL;
    CHECK(qm_machine_attach_tcp(address, QM_TIMEOUT_DEFAULT, &second) == QM_STATUS_OK &&
              qm_machine_execute(second, "stop", NULL, QM_TIMEOUT_DEFAULT, NULL) ==
                  QM_STATUS_OK,
          "a second client attaches and stops the VM");
    char *event = NULL;
    CHECK(qm_machine_events_wait(machine, "[{\"name\": \"RESUME\"}, {\"name\": \"STOP\"}]",
                                 10000, &event) == QM_STATUS_OK &&
              event && strstr(event, "\"event\":\"STOP\"") != NULL,
          "qm_machine_events_wait takes the first of several events: STOP");
    qm_string_free(event);
    event = NULL;
    CHECK_STATUS(qm_machine_events_wait(machine, "{\"name\": \"STOP\"}", 0, NULL),
                 QM_STATUS_INVALID_JSON, "events_wait needs an array");
    CHECK(qm_machine_execute(second, "cont", NULL, QM_TIMEOUT_DEFAULT, NULL) == QM_STATUS_OK &&
              qm_machine_next_event(machine, 10000, &event) == QM_STATUS_OK && event &&
              strstr(event, "\"event\":\"RESUME\"") != NULL,
          "qm_machine_next_event takes the next event: RESUME");
    qm_string_free(event);
    event = NULL;
    CHECK_STATUS(qm_machine_next_event(machine, 0, &event), QM_STATUS_TIMEOUT,
                 "no event left: QM_STATUS_TIMEOUT");
    qm_machine_free(second);
    char *chardevs = NULL;
    CHECK(qm_machine_execute(machine, "query-chardev", NULL, QM_TIMEOUT_DEFAULT, &chardevs) ==
                  QM_STATUS_OK &&
              chardevs &&
              strstr(chardevs, "\"filename\":\"null\",\"label\":\"compat_monitor0\"") != NULL,
          "-monitor null replaces the default monitor");
    qm_string_free(chardevs);
    CHECK(qm_machine_console_pty(machine, &text) == QM_STATUS_OK && text &&
              strncmp(text, "/dev/pts/", 9) == 0,
          "qm_machine_console_pty gives the console's terminal");
    qm_string_free(text);
    text = NULL;
    CHECK(qm_machine_name(machine, &text) == QM_STATUS_OK && text && strcmp(text, "c-vm") == 0,
          "qm_machine_name");
    qm_string_free(text);
    text = NULL;
    CHECK(qm_machine_log_path(machine, &text) == QM_STATUS_OK && text && strcmp(text, log) == 0,
          "qm_machine_log_path is in the log dir, under the name");
    qm_string_free(text);
    text = NULL;
    CHECK(qm_machine_execute_raw(machine, "{\"execute\": \"query-status\", \"id\": \"mine\"}",
                                 QM_TIMEOUT_DEFAULT, &text) == QM_STATUS_OK &&
              text && strstr(text, "{\"return\":{") == text &&
              strstr(text, "\"id\":\"mine\"") != NULL,
          "qm_machine_execute_raw returns the whole reply, with the caller's id");
    qm_string_free(text);
    text = NULL;
    CHECK(qm_machine_execute_raw(machine, "{\"execute\": \"cont\", \"bogus\": 1}",
                                 QM_TIMEOUT_DEFAULT, &text) == QM_STATUS_OK &&
              text && strstr(text, "{\"error\":{\"class\":\"GenericError\"") == text,
          "a request QEMU refuses: its error reply, returned whole");
    qm_string_free(text);
    text = NULL;
    CHECK_STATUS(qm_machine_execute_raw(machine, "[1]", QM_TIMEOUT_DEFAULT, &text),
                 QM_STATUS_INVALID_JSON, "a raw request that is not an object");
    CHECK_STATUS(qm_machine_wait_or_kill(machine, 300), QM_STATUS_NOT_GRACEFUL,
                 "wait_or_kill of a QEMU that does not exit kills it: QM_STATUS_NOT_GRACEFUL");
    CHECK(qm_machine_is_running(machine, &running) == QM_STATUS_OK && !running,
          "it is gone");
    struct stat st;
    CHECK(stat(sock, &st) == 0, "the killed QEMU left its QMP socket");
    qm_machine_free(machine);
    CHECK(stat(sock, &st) != 0, "qm_machine_free removes it");
    CHECK(file_mode(logs) == 0700 && file_mode(log) == 0600 && file_mode(console_log) == 0600,
          "the log dir and logs are owner-only");
    CHECK(file_contains(log, "char device redirected to /dev/pts/"),
          "QEMU's log stays after the machine is gone");
    unlink(log);
    unlink(console_log);
    rmdir(logs);
    rmdir(dir);

    /* wait_or_kill of a QEMU that exits; the console of a machine without a pty. */
    machine = NULL;
    CHECK_STATUS(launch_json(NONE_JSON, &machine), QM_STATUS_OK, "launch");
    CHECK_STATUS(qm_machine_console_pty(machine, &text), QM_STATUS_UNSUPPORTED,
                 "console_pty without a pty console: QM_STATUS_UNSUPPORTED");
    CHECK_STATUS(qm_machine_qtest(machine, "inb 0x80", QM_TIMEOUT_DEFAULT, NULL),
                 QM_STATUS_UNSUPPORTED, "qtest without the channel: QM_STATUS_UNSUPPORTED");
    CHECK(qm_machine_execute(machine, "quit", NULL, QM_TIMEOUT_DEFAULT, NULL) == QM_STATUS_OK &&
              qm_machine_wait_or_kill(machine, 10000) == QM_STATUS_OK,
          "wait_or_kill of a QEMU that exits returns QM_STATUS_OK");
    qm_machine_free(machine);
}

/* QM_TEST_MODE=reaper: see the top of the file. */
static int play_reaper(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, reap_everything, NULL);
    pthread_detach(thread);
    qm_config *config = NULL;
    qm_machine *machine = NULL;
    qm_config_from_json(NONE_JSON, &config);
    CHECK(qm_guardian_pid() == 0, "no guardian before the first launch");
    CHECK_STATUS(qm_machine_launch(config, &machine), QM_STATUS_OK,
                 "launch while another thread reaps with waitpid(-1)");
    CHECK(qm_guardian_pid() > 0 && stat_field(pid_of(machine), 4) == qm_guardian_pid(),
          "the first launch started the guardian, QEMU's parent");
    qm_config_free(config);
    CHECK_STATUS(qm_machine_shutdown(machine, 10000), QM_STATUS_OK,
                 "shutdown sees QEMU exit while another thread reaps");
    int code = -2;
    CHECK(qm_machine_exit_status(machine, &code, NULL) == QM_STATUS_OK && code == 0,
          "QEMU's exit status (0) is not taken by the other thread's waitpid");
    qm_machine_free(machine);
    check_qemu_img_status("while another thread reaps with waitpid(-1)");
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
    if (mode && strcmp(mode, "forker") == 0) {
        return play_forker();
    }
    /* A process group of our own, so that check_process_tree() can signal it without
     * reaching whoever ran us. */
    setpgid(0, 0);
    record_baseline();
    check_version();
    check_guardian(); /* first: before anything starts the guardian */
    check_argument_errors();
    check_error_accessors();
    check_launch_failures();
    check_qmp_and_events();
    check_process_tree();
    check_timeouts();
    check_strings_and_bytes();
    check_oob();
    check_fds();
    check_attach();
    check_free_running();
    check_shutdown_not_graceful();
    check_sigpipe();
    check_console_log_existing();
    check_stale_handles();
    check_console_bounds();
    check_callers_accel();
    check_thread_exit();
    check_threads();
    check_forking_wrapper();
    check_sigchld_ignored();
    check_images();
    check_vm_description();
    check_qtest();
    check_qemumachine();
    check_driver();
    const char *skip = getenv("QM_TEST_SKIP_GUEST");
    if (!(skip && strcmp(skip, "1") == 0)) {
        check_guest_console();
        check_guest_agent();
    }
    check_signals_and_threads_untouched();
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
