//! The README's configuration tables are generated from the variables' declarations
//! (`src/config`): this test fails when they differ. `BLESS=1 cargo test --test readme`
//! rewrites them in place. Its picture of the code ("How the code is laid out") names
//! every folder under `src/`, and only those.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
fn section(readme: &str, name: &str) -> (usize, usize) {
    let start = format!("<!-- {name}:start -->\n");
    let end = format!("<!-- {name}:end -->");
    let from = readme
        .find(&start)
        .unwrap_or_else(|| panic!("no {start} in README.md"))
        + start.len();
    let to = readme[from..]
        .find(&end)
        .unwrap_or_else(|| panic!("no {end} in README.md"))
        + from;
    (from, to)
}

#[test]
fn the_readme_tables_are_the_generated_ones() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let bless = std::env::var_os("BLESS").is_some();
    for (name, table) in [
        ("configuration-table", tcpie::config::server_table()),
        ("tracing-table", tcpie::config::otel_table()),
    ] {
        let (from, to) = section(&readme, name);
        if bless {
            readme.replace_range(from..to, &table);
        } else {
            assert_eq!(
                readme[from..to],
                table,
                "README.md's {name} differs from the declarations in src/config; \
                 run BLESS=1 cargo test --test readme"
            );
        }
    }
    if bless {
        std::fs::write(&path, readme).unwrap();
    }
}

#[test]
fn the_readme_names_every_folder_of_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let (from, to) = section(&readme, "layout");
    let mut named: Vec<String> = readme[from..to]
        .lines()
        .filter_map(|l| l.strip_prefix("| `src/"))
        .filter_map(|l| l.split_once("/` |").map(|(name, _)| name.to_string()))
        .collect();
    named.sort();
    let mut folders: Vec<String> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    folders.sort();
    assert_eq!(
        named, folders,
        "README.md's \"How the code is laid out\" must name every folder under src/"
    );
}
