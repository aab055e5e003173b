//! `harness package build DIR` and `harness package inspect FILE`: service packages.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use harness::package::{
    BuildProgress, FileKind, MANIFEST_FILE, Manifest, PackageBuilder, PackageError, Verifier,
};

use crate::output::{errln, errtext, outln};
use crate::run::EXIT_HARNESS_FAILED;

/// Exit code of a package that breaks a rule (a refusal, an invalid manifest, a checksum that
/// does not match).
pub const EXIT_REFUSED: u8 = 1;

#[derive(Args)]
pub struct PackageArgs {
    #[command(subcommand)]
    command: PackageCommand,
}

#[derive(Subcommand)]
enum PackageCommand {
    /// Pack a directory into a reproducible tar.gz, and write its sha256 beside it.
    Build(BuildArgs),
    /// Verify a package as deployment does, then print its manifest, files and checksum.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// The package's source directory (manifest.yaml, bin/, scripts/, ...).
    dir: PathBuf,
    /// Where to write the archive; FILE.sha256 is written beside it. Default:
    /// NAME-VERSION.tar.gz in the current directory.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Refuse more file content than this: bytes, or with a K, M or G suffix (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = harness::topology::parse_size)]
    max_size: u64,
}

#[derive(Args)]
struct InspectArgs {
    /// The package archive.
    file: PathBuf,
    /// Refuse more content (or a larger archive) than this: bytes, or with a K, M or G suffix.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = harness::topology::parse_size)]
    max_size: u64,
}

pub fn package(args: PackageArgs) -> ExitCode {
    let result = match args.command {
        PackageCommand::Build(args) => build(args),
        PackageCommand::Inspect(args) => inspect(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            errln!("harness package: failed to {error}");
            ExitCode::from(if error.is_refusal() {
                EXIT_REFUSED
            } else {
                EXIT_HARNESS_FAILED
            })
        }
    }
}

fn build(args: BuildArgs) -> Result<(), PackageError> {
    let output = match args.output {
        Some(output) => output,
        None => {
            let path = args.dir.join(MANIFEST_FILE);
            let text = std::fs::read_to_string(&path).map_err(|source| PackageError::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let manifest = Manifest::from_yaml(&path, &text)?;
            PathBuf::from(format!("{}.tar.gz", manifest.install_dir_name()))
        }
    };
    let mut builder = PackageBuilder::new(&args.dir).with_max_size(args.max_size);
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        let mut last = Instant::now() - Duration::from_secs(1);
        builder = builder.with_progress(move |p: &BuildProgress| {
            let done = p.files_done == p.files_total;
            if done || last.elapsed() >= Duration::from_millis(100) {
                last = Instant::now();
                errtext!(
                    "\rpacking: {} / {} files, {} / {}",
                    p.files_done,
                    p.files_total,
                    human(p.bytes_done),
                    human(p.bytes_total)
                );
                let _ = std::io::stderr().flush();
            }
        });
    }
    let built = builder.build(&output);
    if terminal {
        errtext!("\r\x1b[K");
    }
    let built = built?;
    let seconds = built.elapsed.as_secs_f64();
    errln!(
        "built {} {}: {} entries, {} in {:.2} s ({}/s), {} compressed",
        built.manifest.name,
        built.manifest.version,
        built.files.len(),
        human(built.content_size),
        seconds,
        human((built.content_size as f64 / seconds.max(1e-9)) as u64),
        human(built.size),
    );
    outln!("{}  {}", built.sha256, built.path.display());
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<(), PackageError> {
    let info = Verifier::new()
        .with_max_size(args.max_size)
        .verify(&args.file)?;
    let manifest = &info.manifest;
    outln!("package:  {} {}", manifest.name, manifest.version);
    outln!(
        "installs: {}/{}/releases/{} (by default; harness deploy --root and --service change it)",
        harness::package::DEFAULT_ROOT,
        manifest.name,
        manifest.install_dir_name()
    );
    if let Some(port) = manifest.port {
        outln!("port:     {port}");
    }
    outln!(
        "size:     {} compressed, {} of content",
        human(info.size),
        human(info.content_size)
    );
    match &info.checksum_file {
        Some(file) => outln!("sha256:   {} (matches {})", info.sha256, file.display()),
        None => outln!("sha256:   {} (no .sha256 file to check)", info.sha256),
    }
    outln!("\n{MANIFEST_FILE}:");
    for line in info.manifest_text.lines() {
        outln!("  {line}");
    }
    outln!("\nfiles:");
    let width = info
        .files
        .iter()
        .map(|f| f.size.to_string().len())
        .max()
        .unwrap_or(1);
    for file in &info.files {
        let name = match &file.kind {
            FileKind::Directory => format!("{}/", file.path),
            FileKind::Symlink { target } => format!("{} -> {target}", file.path),
            FileKind::File => file.path.clone(),
        };
        outln!("  {} {:>width$}  {name}", file.mode_string(), file.size);
    }
    outln!(
        "\nverified: {} entries, rules and checksum ok",
        info.files.len()
    );
    Ok(())
}

/// Bytes for people: `512 B`, `3.1 KiB`, `48.0 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human(1536), "1.5 KiB");
    }
}
