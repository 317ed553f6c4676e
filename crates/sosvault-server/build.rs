//! Makes sure Leaflet's `dist` files (from the npm registry, pinned in
//! `web/package-lock.json`) are in `web/node_modules/` before `src/web.rs`
//! embeds them with `include_bytes!`.
//!
//! Present: nothing to do. Missing: run `npm ci` in `web/` when npm exists;
//! otherwise stop with a message that says what to install and run.

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let web = Path::new(&manifest).join("web");
    let leaflet = web.join("node_modules/leaflet/dist/leaflet.js");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-changed=web/node_modules/leaflet/dist/leaflet.js");
    if leaflet.exists() {
        return;
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    println!(
        "cargo:warning=web/node_modules is missing: running `npm ci` in {}",
        web.display()
    );
    let status = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&web)
        .status();
    match status {
        Ok(s) if s.success() && leaflet.exists() => {}
        Ok(s) => fail(&web, &format!("`npm ci` failed ({s})")),
        Err(e) => fail(&web, &format!("npm could not be run ({e})")),
    }
}

fn fail(web: &Path, why: &str) -> ! {
    eprintln!(
        "\nsosvault-server embeds Leaflet from the npm registry and needs \
         {}/node_modules/leaflet/dist.\n{why}.\nInstall Node.js and npm \
         (e.g. `apt-get install -y nodejs npm`), then run\n    \
         npm ci --prefix {}\nand build again.\n",
        web.display(),
        web.display()
    );
    std::process::exit(1);
}
