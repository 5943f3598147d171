//! Progress bars of long commands, in one style, and only where a person
//! watches: none under CI or when stderr is a pipe or a file.

/// A bar of `len` steps drawn with `template` (indicatif's syntax).
pub fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("progress template")
            .progress_chars("=> "),
    );
    if std::env::var_os("CI").is_some() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}
