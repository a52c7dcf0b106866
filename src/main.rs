use std::process::ExitCode;

fn main() -> ExitCode {
    shardgate::cli::main()
}
