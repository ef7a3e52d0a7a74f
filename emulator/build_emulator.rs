//! Part of build.rs: builds the emulated CUDA device (emulator/README.md)
//! beside the fatbins, with g++ only. Each `kernels/<m>.cu` is compiled for
//! the host through `emulator/cuda_emu.h`, together with a generated table of
//! its kernels (found by name in the source) and the hash of the fatbin that
//! nvcc made from the same file, by which the emulated cuModuleLoadData
//! recognises the image. Two builds: `fast` (-O2) and `memcheck`
//! (AddressSanitizer, for out-of-bounds device accesses).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// FNV-1a over the fatbin as its header sizes it (the same as
/// emulator/driver.cpp computes from the image it is handed).
fn fatbin_hash(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 16 || u32::from_le_bytes(bytes[0..4].try_into().unwrap()) != 0xBA55_ED50 {
        return None;
    }
    let header = u16::from_le_bytes(bytes[6..8].try_into().unwrap()) as usize;
    let body = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let size = (header + body).min(bytes.len());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &bytes[..size] {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Some(h)
}

/// Names of the `extern "C" __global__` kernels of a source file (declared
/// with the KERNEL macro or spelled out, optionally with __launch_bounds__).
pub fn kernel_names(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    for marker in ["KERNEL void", "extern \"C\" __global__ void"] {
        let mut rest = src;
        while let Some(i) = rest.find(marker) {
            let line_start = rest[..i].rfind('\n').map(|p| p + 1).unwrap_or(0);
            let is_define = rest[line_start..i].trim_start().starts_with("#define");
            let mut tail = rest[i + marker.len()..].trim_start();
            if let Some(t) = tail.strip_prefix("__launch_bounds__") {
                let close = t.find(')').unwrap_or(0);
                tail = t[close + 1..].trim_start();
            }
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            if !is_define && !name.is_empty() && tail[end..].trim_start().starts_with('(') {
                names.push(name.to_string());
            }
            rest = &rest[i + marker.len()..];
        }
    }
    names.sort();
    names.dedup();
    names
}

struct Variant {
    name: &'static str,
    flags: &'static [&'static str],
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "fast",
        flags: &["-O2"],
    },
    Variant {
        name: "memcheck",
        flags: &["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"],
    },
];

const COMMON: &[&str] = &[
    "-std=c++20",
    "-fPIC",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-pthread",
    "-Wall",
    "-Wno-unused-function",
    "-Wno-unknown-pragmas",
    "-Wno-unused-variable",
];

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Builds both variants; on success appends `EMULATOR_DIRS` to `generated`.
pub fn build(root: &Path, out_dir: &Path, fatbins: &[(PathBuf, PathBuf)], generated: &mut String) {
    if std::env::var("LPAF_NO_EMULATOR")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        return;
    }
    let require = std::env::var("LPAF_REQUIRE_NVCC")
        .map(|v| v == "1")
        .unwrap_or(false);
    match try_build(root, out_dir, fatbins) {
        Ok((fast, memcheck)) => {
            let _ = writeln!(
                generated,
                "pub const EMULATOR_DIRS: Option<(&str, &str)> = Some(({:?}, {:?}));",
                fast.display().to_string(),
                memcheck.display().to_string()
            );
        }
        Err(e) if require => panic!("building the emulated CUDA device: {e}"),
        Err(e) => println!("cargo:warning=the emulated CUDA device was not built: {e}"),
    }
}

fn try_build(
    root: &Path,
    out_dir: &Path,
    fatbins: &[(PathBuf, PathBuf)],
) -> Result<(PathBuf, PathBuf), String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_string());
    let emu = root.join("emulator");
    let kernels = root.join("kernels");
    let gen_dir = out_dir.join("emulator-src");
    std::fs::create_dir_all(&gen_dir).map_err(|e| e.to_string())?;

    // One translation unit per kernel file.
    let mut units: Vec<PathBuf> = vec![emu.join("driver.cpp"), emu.join("fiber.cpp")];
    for (src, fatbin) in fatbins {
        let stem = src.file_stem().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let image = std::fs::read(fatbin).map_err(|e| format!("{}: {e}", fatbin.display()))?;
        let hash =
            fatbin_hash(&image).ok_or_else(|| format!("{} is not a fatbin", fatbin.display()))?;
        let names = kernel_names(&text);
        let mut tu = String::new();
        let _ = writeln!(
            tu,
            "// Generated by build.rs: {stem}.cu for the emulated device."
        );
        let _ = writeln!(tu, "#include \"cuda_emu.h\"");
        let _ = writeln!(tu, "#include {:?}", src.display().to_string());
        let _ = writeln!(
            tu,
            "__attribute__((constructor)) static void emu_register_{stem}() {{"
        );
        let _ = writeln!(tu, "    static const EmuKernel kernels[] = {{");
        for n in &names {
            let _ = writeln!(tu, "        emu_kernel({stem:?}, {n:?}, &{n}),");
        }
        let _ = writeln!(tu, "    }};");
        let _ = writeln!(
            tu,
            "    emu_register_module({stem:?}, {hash}ull, kernels, {});",
            names.len()
        );
        let _ = writeln!(tu, "}}");
        let path = gen_dir.join(format!("{stem}.emu.cpp"));
        std::fs::write(&path, tu).map_err(|e| e.to_string())?;
        units.push(path);
    }
    let cublas = emu.join("cublas.cpp");

    let mut dirs = Vec::new();
    let mut jobs = Vec::new();
    for v in VARIANTS {
        let dir = out_dir.join("emulator").join(v.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for unit in units.iter().chain(std::iter::once(&cublas)) {
            if !unit.exists() {
                continue;
            }
            let obj = dir.join(format!("{}.o", unit.file_name().unwrap().to_str().unwrap()));
            let mut cmd = Command::new(&cxx);
            cmd.args(COMMON)
                .args(v.flags)
                .arg(format!("-I{}", emu.display()))
                .arg(format!("-I{}", kernels.display()))
                .arg("-c")
                .arg(unit)
                .arg("-o")
                .arg(&obj);
            jobs.push((cmd, unit.clone(), obj));
        }
        dirs.push(dir);
    }
    // Compile in parallel, a few at a time.
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let mut errors = Vec::new();
    let mut pending: Vec<(std::process::Child, PathBuf)> = Vec::new();
    let mut queue = jobs.into_iter();
    loop {
        while pending.len() < parallel {
            match queue.next() {
                Some((mut cmd, unit, _)) => {
                    let child = cmd
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .map_err(|e| format!("running {cxx}: {e}"))?;
                    pending.push((child, unit));
                }
                None => break,
            }
        }
        if pending.is_empty() {
            break;
        }
        let (child, unit) = pending.remove(0);
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            errors.push(format!(
                "{}:\n{}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    for (v, dir) in VARIANTS.iter().zip(&dirs) {
        let objs: Vec<PathBuf> = units
            .iter()
            .map(|u| dir.join(format!("{}.o", u.file_name().unwrap().to_str().unwrap())))
            .collect();
        run(
            Command::new(&cxx)
                .args(v.flags)
                .arg("-shared")
                .arg("-pthread")
                .arg("-Wl,-soname,libcuda.so")
                .arg("-o")
                .arg(dir.join("libcuda.so"))
                .args(&objs),
            "linking the emulated libcuda.so",
        )?;
        if cublas.exists() {
            run(
                Command::new(&cxx)
                    .args(v.flags)
                    .arg("-shared")
                    .arg("-pthread")
                    .arg("-Wl,-soname,libcublas.so")
                    .arg("-o")
                    .arg(dir.join("libcublas.so"))
                    .arg(dir.join("cublas.cpp.o"))
                    .arg(format!("-L{}", dir.display()))
                    .arg("-lcuda")
                    .arg("-Wl,-rpath,$ORIGIN"),
                "linking the emulated libcublas.so",
            )?;
        }
    }
    Ok((dirs[0].clone(), dirs[1].clone()))
}
