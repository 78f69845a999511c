//! `fdpass listen`: listening sockets, opened here and handed to a command.

use crate::address;
use crate::cli::ListenArgs;
use crate::exec;
use crate::fail::Result;
use crate::output::Log;

/// `fdpass listen`: binds every address, then runs the command with them.
pub fn run(args: ListenArgs, log: Log) -> Result<()> {
    let ListenArgs {
        addrs,
        names,
        command,
        log: _,
    } = args;
    let names = exec::fd_names(names, addrs.len(), |i| addrs[i].kind())?;
    let program = exec::find(&command[0])?;
    let bound = addrs
        .iter()
        .map(|addr| {
            let bound = addr.listen()?;
            log.say(format_args!("listening at {addr}"));
            Ok(bound)
        })
        .collect::<Result<Vec<_>>>()?;
    let fds = bound.into_iter().map(address::Bound::into_fd).collect();
    Err(exec::exec_with_fds(fds, &names, &program, &command, &[]))
}
