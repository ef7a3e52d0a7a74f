//! Standard output that never panics. `println!` panics when stdout is a
//! closed pipe (`lpaf info --json DIR | head -c 10`); every line the CLI
//! prints goes through [`write_stdout`] instead: a closed pipe ends the
//! process quietly with status 0 (the reader wanted no more), any other
//! write error (a full disk behind a redirect) is an error.

use std::io::Write;

use crate::error::{Error, Result};

/// Writes `args` (and a newline when `newline`) to stdout and flushes.
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) -> Result<()> {
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|_| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|_| o.flush());
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::io("standard output", e)),
    }
}

/// `println!` through [`write_stdout`]; evaluates to `Result<()>`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::write_stdout(format_args!($($arg)*), true) };
}

/// `print!` through [`write_stdout`]; evaluates to `Result<()>`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write_stdout(format_args!($($arg)*), false) };
}
