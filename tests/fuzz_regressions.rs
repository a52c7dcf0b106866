//! The fuzz targets' kept inputs, replayed under stable `cargo test`: each target's minimized
//! corpus (`fuzz/regressions/<target>/corpus.bin`, the inputs one after the other, each after
//! its length as 4 bytes little-endian) and every crash it found (one file each, beside it) go
//! through the same check the fuzzer ran (`shardgate::fuzzing`), which must not panic.

use std::path::Path;

#[test]
fn every_kept_fuzz_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut total = 0;
    for (name, check) in shardgate::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target keeps its corpus)", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let data = std::fs::read(&path).expect("input");
            let inputs = if path.extension().is_some_and(|e| e == "bin") {
                unbundle(&data).unwrap_or_else(|| panic!("{}: a malformed bundle", path.display()))
            } else {
                vec![data.as_slice()]
            };
            for (i, input) in inputs.iter().enumerate() {
                assert!(
                    on_worker_stack(*check, input),
                    "{name}: {} input {i} panicked",
                    path.display()
                );
                n += 1;
            }
        }
        assert!(n > 0, "{name}: no kept inputs in {}", dir.display());
        total += n;
    }
    eprintln!("{total} kept fuzz inputs replayed");
}

/// The inputs of a bundle: each after its length (4 bytes, little-endian).
fn unbundle(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
        out.push(data.get(4..4 + len)?);
        data = &data[4 + len..];
    }
    Some(out)
}

/// Runs `check` on a thread with the proxy's worker stack (`proxy::WORKER_STACK`), where the
/// proxy runs the same code; `false` if it panicked.
fn on_worker_stack(check: fn(&[u8]), input: &[u8]) -> bool {
    let input = input.to_vec();
    std::thread::Builder::new()
        .stack_size(shardgate::proxy::WORKER_STACK)
        .spawn(move || check(&input))
        .expect("thread")
        .join()
        .is_ok()
}
