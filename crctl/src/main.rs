use clap::Parser;

fn main() -> std::process::ExitCode {
    crctl::run(crctl::Cli::parse())
}
