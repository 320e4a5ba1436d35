#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! What `heap::release_free_memory` does, alone in its process so that no other test's
//! allocations move the resident set: freed heap memory that younger allocations pin in place
//! stays resident (glibc keeps it for reuse) until the release hands its pages back. The
//! delta buffer's requests are such allocations (tens of KB each, among the clients' own);
//! tests/otlp_answers.rs and bench/held-exports measure the agent after a flush.

use cc_heartbeat::heap::release_free_memory;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn freed_heap_memory_goes_back_to_the_system_on_release() {
    const BLOCKS: usize = 256;
    const BLOCK: usize = 90 * 1024;
    // Each block (under glibc's mmap threshold, so from the heap) followed by a small block
    // that outlives it, as a held request is followed by the clients' allocations.
    let mut blocks = Vec::with_capacity(BLOCKS);
    let mut pins = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        blocks.push(std::hint::black_box(vec![i as u8; BLOCK]));
        pins.push(std::hint::black_box(vec![i as u8; 64]));
    }
    let holding = rss_kib();
    drop(blocks);
    let freed = rss_kib();
    release_free_memory();
    let released = rss_kib();
    let total = (BLOCKS * BLOCK / 1024) as u64;
    println!(
        "{total} KiB in blocks: RSS {holding} KiB holding, {freed} KiB freed, {released} KiB released"
    );
    assert!(
        freed + total / 4 > holding,
        "freed but pinned, the memory stays resident: {holding} -> {freed} KiB"
    );
    assert!(
        freed.saturating_sub(released) > total * 3 / 4,
        "released: {freed} -> {released} KiB of {total} KiB freed"
    );
    assert_eq!(
        pins.iter().map(|p| p[0] as usize).sum::<usize>(),
        (0..BLOCKS).map(|i| i % 256).sum::<usize>()
    );
}
