# Two shared directories: one at the default place, one declared; a human
# and agents as members, read-write and read-only.
{
  module = {
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada.uid = 1100;
      agents.vox.uid = 1101;
      sharedDirs.review.members = { ada = "rw"; vox = "ro"; josh = "rw"; };
      sharedDirs.drop = { path = "/srv/shared/drop"; members.vox = "rw"; };
    };
    users.users.josh.isNormalUser = true;
  };
}
