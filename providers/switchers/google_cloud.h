/* SPDX-License-Identifier: MIT */
/* Google Cloud switcher: sets a project metadata key that the Google Cloud gateway follows. */
#ifndef DHAF_GCP_H
#define DHAF_GCP_H

struct gcp_config {
    char *project;
    char *metadata_key;
    char *credentials_path;
    char *api_url;
};

#endif
