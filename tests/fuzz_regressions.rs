//! The fuzz targets' harnesses replayed as ordinary tests, on every input the fuzzers
//! ever crashed on (fuzz/regressions/) and on the seed corpora (fuzz/corpus/).
#![allow(clippy::unwrap_used)]

use std::path::Path;

mod admission {
    include!("../fuzz/fuzz_targets/admission_check.rs");
}

mod request_head {
    include!("../fuzz/fuzz_targets/request_head_check.rs");
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["fuzz/regressions", "fuzz/corpus"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            check(&std::fs::read(path).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn admission_inputs() {
    // Includes the crash where a rate of 0 made the bucket's arithmetic saturate and
    // admit everything.
    assert!(replay("admission", admission::check) >= 3);
}

#[test]
fn request_head_inputs() {
    assert!(replay("request_head", request_head::check) >= 4);
}
