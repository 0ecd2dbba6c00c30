//! A 64 MiB file copied into and out of a real qemu-ga (run on the host) byte-exact, with the
//! copying process's peak memory bounded far below the file's size: the copies stream in
//! chunks, never the whole file (nor its base64) in memory. Alone in its test binary, so that
//! the peak resident size measured is this copy's.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::time::{Duration, Instant};

use qemu_machine_tests::qga::HostAgent;
use qemu_machine_tests::support::scratch;
use qemu_process::GuestAgent;

const SIZE: u64 = 64 << 20;
/// The most the peak resident size may grow during one copy. A copy holds a few 256 KiB
/// chunks and their base64; the file is 64 MiB (87 MiB as base64).
const GROWTH_BOUND: u64 = 16 << 20;

/// Peak resident size of this process since the last [`reset_peak`], in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn current_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Resets the peak resident size to the current one (Linux ≥ 4.0: `5` to `clear_refs`).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Writes `SIZE` bytes of a deterministic, incompressible-looking sequence, 1 MiB at a time.
fn write_pattern(path: &std::path::Path) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..SIZE / (1 << 20) {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}

/// Compares two files 1 MiB at a time.
fn same_content(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn sixty_four_mib_both_ways_byte_exact_in_bounded_memory() {
    let scratch = scratch("qga-copy");
    let dir = scratch.path();
    let source = dir.join("source");
    let inside = dir.join("inside");
    let back = dir.join("back");
    write_pattern(&source);

    let host = HostAgent::start(dir);
    let mut agent = GuestAgent::connect(&host.socket, Duration::from_secs(10)).unwrap();
    agent.set_timeout(Duration::from_secs(60));
    agent.guest().ping().unwrap();

    let base = current_rss();
    reset_peak();
    let started = Instant::now();
    let n = agent
        .guest()
        .copy_in_file(&source, inside.to_str().unwrap())
        .unwrap();
    let copy_in = started.elapsed();
    let peak_in = peak_rss();
    assert_eq!(n, SIZE);
    assert!(same_content(&source, &inside), "copy in differs");

    reset_peak();
    let started = Instant::now();
    let n = agent
        .guest()
        .copy_out_file(inside.to_str().unwrap(), &back)
        .unwrap();
    let copy_out = started.elapsed();
    let peak_out = peak_rss();
    assert_eq!(n, SIZE);
    assert!(same_content(&source, &back), "copy out differs");

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "64 MiB through qemu-ga: in {copy_in:.2?} ({:.1} MiB/s), out {copy_out:.2?} \
         ({:.1} MiB/s); resident before {:.1} MiB, peak during copy in {:.1} MiB, out {:.1} MiB",
        64.0 / copy_in.as_secs_f64(),
        64.0 / copy_out.as_secs_f64(),
        mib(base),
        mib(peak_in),
        mib(peak_out),
    );
    for (what, peak) in [("in", peak_in), ("out", peak_out)] {
        assert!(
            peak < base + GROWTH_BOUND,
            "copy {what}: peak resident {:.1} MiB, more than {:.1} MiB over the {:.1} MiB before",
            mib(peak),
            mib(GROWTH_BOUND),
            mib(base)
        );
    }
    drop(agent);
    drop(host);
}
