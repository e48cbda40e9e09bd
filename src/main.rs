mod cli;

fn main() {
    hfsky::runtime::configure();
    std::process::exit(cli::run());
}
