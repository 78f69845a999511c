//! `fdpass listen` on Windows: listening sockets, opened here and handed
//! to a command by the protocol of `io_fdpass::activation`.

use crate::cli::ListenArgs;
use crate::exec;
use crate::fail::Result;
use crate::output::Log;

/// `fdpass listen`: binds every address, then runs the command with them
/// and passes on its exit status.
pub fn run(args: ListenArgs, log: Log) -> Result<()> {
    let ListenArgs {
        addrs,
        names,
        command,
        log: _,
    } = args;
    let names = exec::fd_names(names, addrs.len(), |i| addrs[i].kind())?;
    let bound = addrs
        .iter()
        .map(|addr| {
            let bound = addr.listen()?;
            log.say(format_args!("listening at {addr}"));
            Ok(bound)
        })
        .collect::<Result<Vec<_>>>()?;
    Err(exec::run_with_sockets(&bound, &names, &command, |_| Ok(())))
}
