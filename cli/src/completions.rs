//! `traffic-mirror completions SHELL`: the completion scripts. bash's is written here from
//! the command's own definition (clap_complete's names its functions inconsistently for a
//! program whose name has a hyphen, so that nothing completes after the subcommand:
//! clap-rs/clap#6421), and so is zsh's, the same function run by zsh's `bashcompinit`;
//! fish's is clap_complete's, with the values of a positional argument that has a fixed
//! list (clap_complete offers files there); the others are clap_complete's. bash's, zsh's
//! and fish's are loaded in their real shells by the command's tests.

use clap::Command;
use clap_complete::Shell;

/// The completion script for `shell`.
pub fn script(shell: Shell, command: &mut Command) -> Vec<u8> {
    match shell {
        Shell::Bash => bash(command).into_bytes(),
        Shell::Zsh => zsh(command).into_bytes(),
        Shell::Fish => fish(command),
        other => {
            let mut script = Vec::new();
            clap_complete::generate(other, command, "traffic-mirror", &mut script);
            script
        }
    }
}

/// What completes after one subcommand.
struct Words {
    name: String,
    /// Every flag, long and short.
    flags: Vec<String>,
    /// The flags that take a value (free text: nothing is offered for it).
    valued: Vec<String>,
    /// The values its positional argument takes, when they are a fixed list (else files).
    values: Option<Vec<String>>,
}

fn words(command: &Command) -> Vec<Words> {
    command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
        .map(|sub| {
            let mut flags = Vec::new();
            let mut valued = Vec::new();
            let mut values = None;
            for arg in sub
                .get_arguments()
                .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            {
                let names: Vec<String> = arg
                    .get_long()
                    .map(|l| format!("--{l}"))
                    .into_iter()
                    .chain(arg.get_short().map(|s| format!("-{s}")))
                    .collect();
                if arg.is_positional() {
                    let possible: Vec<String> = arg
                        .get_possible_values()
                        .iter()
                        .filter(|v| !v.is_hide_set())
                        .map(|v| v.get_name().to_string())
                        .collect();
                    if !possible.is_empty() {
                        values = Some(possible);
                    }
                    continue;
                }
                if arg.get_action().takes_values() {
                    valued.extend(names.iter().cloned());
                }
                flags.extend(names);
            }
            flags.extend(["--help".to_string(), "-h".to_string()]);
            Words {
                name: sub.get_name().to_string(),
                flags,
                valued,
                values,
            }
        })
        .collect()
}

/// The bash function `_traffic_mirror` and its registration.
fn bash(command: &mut Command) -> String {
    command.build();
    let subcommands = words(command);
    let names: Vec<&str> = subcommands
        .iter()
        .map(|w| w.name.as_str())
        .chain(["help"])
        .collect();
    let mut cases = String::new();
    for sub in &subcommands {
        let positional = match &sub.values {
            Some(values) => format!(
                "COMPREPLY=($(compgen -W \"{}\" -- \"$cur\"))",
                values.join(" ")
            ),
            None => "COMPREPLY=($(compgen -f -- \"$cur\"))".to_string(),
        };
        cases.push_str(&format!(
            "        {name})\n            case \" {valued} \" in *\" $prev \"*) return 0 ;; esac\n            if [[ $cur == -* ]]; then\n                COMPREPLY=($(compgen -W \"{flags}\" -- \"$cur\"))\n            else\n                {positional}\n            fi\n            ;;\n",
            name = sub.name,
            valued = sub.valued.join(" "),
            flags = sub.flags.join(" "),
        ));
    }
    format!(
        r#"# bash completion for traffic-mirror (traffic-mirror completions bash): source it, or
# save it as ~/.local/share/bash-completion/completions/traffic-mirror
_traffic_mirror() {{
    local cur prev sub i
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    sub=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) sub="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$sub" in
        "")
            COMPREPLY=($(compgen -W "{names} --help -h --version -V" -- "$cur"))
            ;;
        help)
            COMPREPLY=($(compgen -W "{names}" -- "$cur"))
            ;;
{cases}    esac
    return 0
}}
complete -o filenames -F _traffic_mirror traffic-mirror
"#,
        names = names.join(" "),
    )
}

/// zsh runs the bash function through its `bashcompinit`.
fn zsh(command: &mut Command) -> String {
    format!(
        "# zsh completion for traffic-mirror (traffic-mirror completions zsh): source it from\n# ~/.zshrc after compinit, e.g. source <(traffic-mirror completions zsh)\nautoload -U +X bashcompinit && bashcompinit\n{}",
        bash(command)
    )
}

/// clap_complete's fish script, and the values of the positional arguments that have a
/// fixed list.
fn fish(command: &mut Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(Shell::Fish, command, "traffic-mirror", &mut script);
    command.build();
    for sub in words(command) {
        if let Some(values) = sub.values {
            script.extend_from_slice(
                format!(
                    "complete -c traffic-mirror -n \"__fish_traffic_mirror_using_subcommand {}\" -f -a \"{}\"\n",
                    sub.name,
                    values.join(" ")
                )
                .as_bytes(),
            );
        }
    }
    script
}
