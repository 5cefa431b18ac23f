# SPDX-License-Identifier: MIT
# CPack settings for the Debian packages (included by the top CMakeLists.txt; `make deb`).
# One package per install component: node, prober, ctl, common.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME dhaf)
set(CPACK_PACKAGE_VENDOR "dhaf")
set(CPACK_PACKAGE_CONTACT "dhaf maintainers <dhaf@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/deb)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL node prober ctl common)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # dhaf-node_0.1.0_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/")
# The runtime libraries each binary links, from dpkg-shlibdeps (dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1) # Debian revision: 0.1.0-1

set(CPACK_DEBIAN_NODE_PACKAGE_NAME dhaf-node)
set(CPACK_DEBIAN_PROBER_PACKAGE_NAME dhaf-prober)
set(CPACK_DEBIAN_CTL_PACKAGE_NAME dhafctl)
set(CPACK_DEBIAN_COMMON_PACKAGE_NAME dhaf-common)
set(CPACK_DEBIAN_COMMON_PACKAGE_ARCHITECTURE all)

set(dhaf_common_dep "dhaf-common (= ${PROJECT_VERSION}-1)")
# procps: /bin/kill of the unit's ExecReload (systemctl reload = SIGHUP)
set(CPACK_DEBIAN_NODE_PACKAGE_DEPENDS "${dhaf_common_dep}, ca-certificates, procps")
set(CPACK_DEBIAN_PROBER_PACKAGE_DEPENDS "${dhaf_common_dep}, ca-certificates")
set(CPACK_DEBIAN_COMMON_PACKAGE_DEPENDS "passwd")
set(CPACK_DEBIAN_NODE_PACKAGE_RECOMMENDS "dhafctl")
set(CPACK_DEBIAN_NODE_PACKAGE_SUGGESTS "etcd-server")

set(CPACK_COMPONENT_NODE_DESCRIPTION
    "dhaf node: distributed high-availability failover\n dhaf-node checks a web service's entry points, agrees with the other nodes and remote\n probers (leadership in etcd) and switches traffic when the current entry point is down.\n Also dhaf-sim, which replays the decision rules on a config.")
set(CPACK_COMPONENT_PROBER_DESCRIPTION
    "dhaf remote prober\n dhaf-prober checks a dhaf cluster's entry points from another vantage point and reports\n to the nodes over gRPC. It needs no etcd.")
set(CPACK_COMPONENT_CTL_DESCRIPTION
    "dhaf command-line client\n dhafctl talks to a dhaf node over gRPC: status, switchover, maintenance.")
set(CPACK_COMPONENT_COMMON_DESCRIPTION
    "dhaf common files\n The dhaf system user, /etc/dhaf, documentation and example configurations.")

set(dhaf_deb ${CMAKE_SOURCE_DIR}/deploy/deb)
set(CPACK_DEBIAN_COMMON_PACKAGE_CONTROL_EXTRA ${dhaf_deb}/common/postinst)
set(CPACK_DEBIAN_NODE_PACKAGE_CONTROL_EXTRA ${dhaf_deb}/node/postinst ${dhaf_deb}/node/prerm
                                            ${dhaf_deb}/node/postrm)
set(CPACK_DEBIAN_PROBER_PACKAGE_CONTROL_EXTRA ${dhaf_deb}/prober/postinst
                                              ${dhaf_deb}/prober/prerm ${dhaf_deb}/prober/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
