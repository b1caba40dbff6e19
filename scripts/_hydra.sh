# Sourced by the scripts that pass paths to hydra: `key=$(hq "$PATH")` keeps a path one literal string, whatever
# it holds (`,` `(` `=` `[` spaces, quotes, `${`): quoted, with hydra's escapes (a quote, backslashes before a quote
# or at the end, an interpolation's `${`). Tested in tests/test_scripts_hydra_quote.py.
hq() {
    local s="$1" out="" run="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        if [ "$c" = '\' ]; then run+='\'; continue; fi
        if [ "$c" = "'" ]; then out+="$run$run\\'"; else out+="$run$c"; fi
        run=""
    done
    out+="$run$run"
    printf "'%s'" "${out//\$\{/\\\$\{}"
}
