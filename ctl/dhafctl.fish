# SPDX-License-Identifier: MIT
# fish completion for dhafctl (installed as share/fish/vendor_completions.d/dhafctl.fish)
set -l commands status status-dhaf status-services status-service explain switchover-candidates \
    switchover-to switchover-purge drain undrain pause resume node-decommission events probers \
    version help
set -l first "not __fish_seen_subcommand_from $commands"
set -l watchable "__fish_seen_subcommand_from status status-dhaf status-services status-service"

complete -c dhafctl -f
complete -c dhafctl -n $first -a status -d 'show the cluster and every service'
complete -c dhafctl -n $first -a status-dhaf -d 'the cluster: leader, epoch, nodes, etcd'
complete -c dhafctl -n $first -a status-services -d 'every service and its entry points'
complete -c dhafctl -n $first -a status-service -d 'one service and its entry points'
complete -c dhafctl -n $first -a explain -d 'why: every vote, the quorum, the rule'
complete -c dhafctl -n $first -a switchover-candidates -d 'healthy entry points to switch to'
complete -c dhafctl -n $first -a switchover-to -d 'switch a service to an entry point, pinned'
complete -c dhafctl -n $first -a switchover-purge -d 'remove the switchover pin'
complete -c dhafctl -n $first -a drain -d 'never target an entry point'
complete -c dhafctl -n $first -a undrain -d 'make a drained entry point a target again'
complete -c dhafctl -n $first -a pause -d 'show decisions without carrying them out'
complete -c dhafctl -n $first -a resume -d 'carry decisions out again'
complete -c dhafctl -n $first -a node-decommission -d 'forget a node that is gone for good'
complete -c dhafctl -n $first -a events -d 'the event history, newest first'
complete -c dhafctl -n $first -a probers -d 'the remote probers and their last reports'
complete -c dhafctl -n $first -a version -d 'client and node versions'
complete -c dhafctl -n $first -a help -d 'help for dhafctl or one command'
complete -c dhafctl -n "__fish_seen_subcommand_from help" -a "$commands"

complete -c dhafctl -s c -l config -r -F -d "a node's config: its gRPC API and token"
complete -c dhafctl -s e -l endpoint -x -d "the node's gRPC API (HOST:PORT)"
complete -c dhafctl -l token-file -r -F -d 'read the API token from a file'
complete -c dhafctl -s t -l token -x -d 'the API token (visible in ps)'
complete -c dhafctl -l ca -r -F -d "CA of the node's TLS certificate"
complete -c dhafctl -l tls -d "TLS with the system's CA roots"
complete -c dhafctl -s o -l output -x -a 'table json' -d 'output format'
complete -c dhafctl -l timeout -x -d 'seconds to wait for the node'
complete -c dhafctl -s s -l service -x -d 'the service'
complete -c dhafctl -s n -l limit -x -d 'how many events'
complete -c dhafctl -s w -l watch -n $watchable -d 'redraw until Ctrl-C'
complete -c dhafctl -l interval -x -n $watchable -d 'seconds between redraws'
complete -c dhafctl -s h -l help -d help
