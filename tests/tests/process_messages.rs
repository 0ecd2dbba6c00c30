//! QMP messages against a real QEMU: a reply over the machine's size bound fails only its
//! command, a command name QEMU cannot have is refused before it is sent, and replies keep
//! QEMU's member order.

use qemu_machine_tests::support::none_config;
use qemu_process::{Error, Machine};
use serde_json::Value;

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is an object"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn a_reply_over_the_bound_fails_its_command_and_the_next_works() {
    for qmp_ids in [false, true] {
        let mut config = none_config();
        config.max_message_size(4096).qmp_ids(qmp_ids);
        let mut vm = Machine::launch(&config).unwrap();
        for command in ["query-qmp-schema", "query-commands"] {
            let err = vm.execute(command, None).unwrap_err();
            match &err {
                Error::ReplyTooLarge {
                    command: named,
                    size,
                    limit,
                } => {
                    assert_eq!(named, command);
                    assert_eq!(*limit, 4096);
                    assert!(*size > 4096, "{size}");
                    let text = err.to_string();
                    assert!(text.contains(&size.to_string()), "{text}");
                    assert!(text.contains("4096"), "{text}");
                }
                other => {
                    panic!("qmp_ids {qmp_ids}, {command}: expected ReplyTooLarge, got {other:?}")
                }
            }
            // The connection goes on: the next command gets its own reply.
            let status = vm.execute("query-status", None).unwrap();
            assert_eq!(status["status"], "running", "{status}");
        }
        // The schema is larger than the command list.
        let sizes: Vec<u64> = ["query-qmp-schema", "query-commands"]
            .into_iter()
            .map(|c| match vm.execute(c, None) {
                Err(Error::ReplyTooLarge { size, .. }) => size,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(sizes[0] > sizes[1], "{sizes:?}");
        assert_eq!(vm.events_too_large(), 0);
        assert!(vm.is_connected());
        vm.shutdown(std::time::Duration::from_secs(20)).unwrap();
    }
}

#[test]
fn the_same_reply_under_the_default_bound_arrives_whole() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let schema = vm.execute("query-qmp-schema", None).unwrap();
    assert!(schema.as_array().unwrap().len() > 100);
    vm.shutdown(std::time::Duration::from_secs(20)).unwrap();
}

#[test]
fn a_command_name_qemu_cannot_have_is_refused_before_sending() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    let huge = "x".repeat(10 << 20);
    let err = vm.execute(&huge, None).unwrap_err();
    let Error::InvalidArgument(message) = &err else {
        panic!("expected InvalidArgument, got {err:?}");
    };
    assert!(message.contains("invalid QMP command name"), "{message}");
    assert!(message.contains("10485760 bytes"), "{message}");
    assert!(message.len() < 300, "{message}");
    for bad in ["query status", "", "-x", "__com.redhat"] {
        assert!(
            matches!(vm.execute(bad, None), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    // The machine still works; a well-formed unknown name is QEMU's to refuse.
    assert_eq!(
        vm.execute("query-status", None).unwrap()["status"],
        "running"
    );
    match vm.execute("__org.example_no-such-command", None) {
        Err(Error::Qmp(e)) => assert_eq!(e.class, qmp_proto::ErrorClass::CommandNotFound),
        other => panic!("{other:?}"),
    }
    vm.shutdown(std::time::Duration::from_secs(20)).unwrap();
}

#[test]
fn replies_keep_qemus_member_order() {
    let mut vm = Machine::launch(&none_config()).unwrap();
    // QEMU 7.2 writes these members in this order (see qmp-proto/fixtures), which is neither
    // alphabetical nor the schema's.
    let version = vm.execute("query-version", None).unwrap();
    assert_eq!(keys(&version), ["qemu", "package"]);
    assert_eq!(keys(&version["qemu"]), ["micro", "minor", "major"]);
    let status = vm.execute("query-status", None).unwrap();
    assert_eq!(keys(&status), ["status", "singlestep", "running"]);
    vm.shutdown(std::time::Duration::from_secs(20)).unwrap();
}
